//! What the researchers' catalogue shows of a version beyond its manifest: sample patches per
//! label, and single patches read out of their shards.

use std::collections::BTreeMap;

use object_store::ObjectStoreExt as _;
use pathfed_core::accounts::Principal;
use pathfed_core::store::get_bytes;
use serde::Serialize;

use crate::Research;
use crate::error::{DatasetError, DatasetResult};
use crate::patches::{ShardIndex, shard_keys};
use crate::versions;

/// Shards read at most to find samples, so a huge version stays quick to show.
const MAX_SHARDS_READ: usize = 24;

/// One sample patch.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Sample {
    /// Patch label.
    pub label: String,
    /// Split of its slide.
    pub split: String,
    /// Research slide id.
    pub research_slide: String,
    /// Position in the shard.
    pub index: usize,
    /// Level-0 position on the research slide.
    pub x: u64,
    /// Level-0 position on the research slide.
    pub y: u64,
    /// Where its JPEG is served.
    pub url: String,
}

/// Up to `per_label` patches of each label of an extracted version, spread over its slides.
pub async fn samples(
    research: &Research,
    user: &Principal,
    name: &str,
    version: i64,
    per_label: usize,
) -> DatasetResult<Vec<Sample>> {
    let manifest = versions::manifest(research, user, name, version).await?;
    let Some(hash) = manifest
        .content
        .extraction
        .as_ref()
        .and_then(|e| e.get("params_hash"))
        .and_then(|h| h.as_str())
        .map(str::to_string)
    else {
        return Ok(Vec::new());
    };
    let mut taken: BTreeMap<String, usize> = BTreeMap::new();
    let mut out = Vec::new();
    for entry in manifest.content.slides.iter().take(MAX_SHARDS_READ) {
        let Ok(index) = shard_index(research, &hash, &entry.slide.id).await else {
            continue;
        };
        // At most two per slide and label, so samples show more than one slide.
        let mut from_slide: BTreeMap<&str, usize> = BTreeMap::new();
        let stride = (index.patches.len() / 8).max(1);
        for (i, patch) in index.patches.iter().enumerate().step_by(stride) {
            let count = taken.entry(patch.label.clone()).or_default();
            let here = from_slide.entry(patch.label.as_str()).or_default();
            if *count >= per_label || *here >= 2 {
                continue;
            }
            *count += 1;
            *here += 1;
            out.push(Sample {
                label: patch.label.clone(),
                split: entry.split.clone(),
                research_slide: entry.slide.id.clone(),
                index: i,
                x: patch.x,
                y: patch.y,
                url: format!("/api/v1/research/patches/{hash}/{}/{i}", entry.slide.id),
            });
        }
    }
    Ok(out)
}

async fn shard_index(research: &Research, hash: &str, slide: &str) -> DatasetResult<ShardIndex> {
    let (index_key, _) = shard_keys(hash, slide);
    let bytes = get_bytes(&research.platform.store, &index_key).await?;
    serde_json::from_slice(&bytes)
        .map_err(|e| DatasetError::Invalid(format!("shard index {index_key}: {e}")))
}

/// The JPEG of patch `n` of a live research slide's shard.
pub async fn patch_jpeg(
    research: &Research,
    user: &Principal,
    hash: &str,
    slide: &str,
    n: usize,
) -> DatasetResult<Vec<u8>> {
    // The researcher check and the slide's liveness, as for downloading the slide itself.
    versions::research_slide_key(research, user, slide).await?;
    let not_found = || DatasetError::NotFound(format!("patch {hash}/{slide}/{n}"));
    // The hash becomes part of an object key: nothing but what `ExtractParams::hash` makes.
    if hash.is_empty() || hash.len() > 64 || !hash.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(not_found());
    }
    let index = shard_index(research, hash, slide)
        .await
        .map_err(|e| match e {
            DatasetError::Core(pathfed_core::CoreError::Store(object_store::Error::NotFound {
                ..
            })) => not_found(),
            other => other,
        })?;
    let entry = index.patches.get(n).ok_or_else(not_found)?;
    let (_, bin_key) = shard_keys(hash, slide);
    let range = entry.offset..entry.offset + entry.length;
    let bytes = research
        .platform
        .store
        .get_range(&object_store::path::Path::from(bin_key.as_str()), range)
        .await
        .map_err(pathfed_core::CoreError::from)?;
    Ok(bytes.to_vec())
}
