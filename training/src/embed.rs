//! The embedding store: a frozen encoder's embedding of every patch of a research slide, one
//! object per (encoder weights, encoder and preprocessing, patch grid, slide), under
//! `research/embeddings/KEY/SLIDE.emb` where KEY hashes everything but the slide. Every later
//! dataset version and run with the same encoder and patch parameters reuses it; opt-out
//! deletes it with the slide's shards (`pathfed_datasets::curate`).
//!
//! Extraction overlaps decoding and storing with the encoder: one thread decodes the next
//! batches while the encoder runs on the current one, another stores each finished slide, and
//! batches run across slide boundaries, so the device waits neither on JPEG decoding or shard
//! reads nor on the object store, and gets full batches.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;

use burn::prelude::*;
use object_store::ObjectStoreExt as _;
use object_store::path::Path as ObjectPath;
use pathfed_core::store::{Store, get_bytes, put_bytes};
use pathfed_models::mil::{Bag, MAX_BAG};
use pathfed_models::vit::{self, EncoderSpec, Vit};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::data::{PatchSet, decode_rgb};
use crate::error::{TrainError, TrainResult};

/// Where embedding objects live; curation's removal of a slide deletes its objects here.
pub const PREFIX: &str = "research/embeddings/";

/// First bytes of an embedding object.
const MAGIC: &[u8; 8] = b"PFEMB\x00\x01\x00";

/// A frozen encoder ready to embed, with what identifies its output.
pub struct Encoder {
    /// Its name in the pretrained folder.
    pub name: String,
    /// Architecture and preprocessing.
    pub spec: EncoderSpec,
    /// The network, without autodiff.
    pub model: Vit,
    /// SHA-256 of the weights file.
    pub weights_sha256: String,
}

impl Encoder {
    /// Finds `name` in the pretrained folder, hashes and loads its weights on `device`.
    pub fn open(pretrained: &Path, name: &str, device: &Device) -> TrainResult<Self> {
        let found = vit::resolve(pretrained, name)?;
        let weights_sha256 = pathfed_core::digest::sha256_file(&found.weights, |_| {})
            .map_err(|e| TrainError::io(format!("reading {}", found.weights.display()), e))?;
        let (model, _) = vit::import::load(&found.spec, &found.weights, device)?;
        Ok(Self {
            name: found.name,
            spec: found.spec,
            model,
            weights_sha256,
        })
    }

    /// The store key of this encoder's embeddings of the patches extracted with `patches_hash`:
    /// it changes with the weights, the architecture, the preprocessing or the patch grid.
    pub fn store_key(&self, patches_hash: &str) -> String {
        let identity = json!({
            "format": 1,
            "weights_sha256": self.weights_sha256,
            "encoder": self.spec,
            "patches": patches_hash,
        });
        hex::encode(Sha256::digest(identity.to_string().as_bytes()))
    }
}

/// The object holding `slide`'s embeddings under `key`.
pub fn object_key(key: &str, slide: &str) -> String {
    format!("{PREFIX}{key}/{slide}.emb")
}

/// Encodes rows of `features` floats: magic, rows and features (u32 LE), then the values.
fn encode(rows: usize, features: usize, values: &[f32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + values.len() * 4);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&(rows as u32).to_le_bytes());
    out.extend_from_slice(&(features as u32).to_le_bytes());
    for v in values {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out
}

/// Decodes what [`encode`] wrote, refusing anything whose size does not add up.
fn decode(bytes: &[u8], what: &str) -> TrainResult<(usize, usize, Vec<f32>)> {
    let bad = |why: &str| TrainError::Invalid(format!("embedding object {what}: {why}"));
    if bytes.len() < 16 || &bytes[..8] != MAGIC {
        return Err(bad("not an embedding file"));
    }
    let word = |at: usize| {
        let mut b = [0u8; 4];
        b.copy_from_slice(&bytes[at..at + 4]);
        u32::from_le_bytes(b) as usize
    };
    let (rows, features) = (word(8), word(12));
    if rows.checked_mul(features).and_then(|n| n.checked_mul(4)) != Some(bytes.len() - 16) {
        return Err(bad("its size does not match its header"));
    }
    let values = bytes[16..]
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    Ok((rows, features, values))
}

/// What an extraction did.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ExtractReport {
    /// The store key the embeddings are under.
    pub key: String,
    /// Slides embedded now.
    pub computed: usize,
    /// Slides whose embeddings were already stored.
    pub reused: usize,
    /// Patches run through the encoder.
    pub encoded: usize,
    /// Width of each embedding.
    pub features: usize,
}

/// One decoded batch on its way to the encoder.
struct Decoded {
    /// Normalised CHW values of each patch, concatenated.
    values: Vec<f32>,
    /// How many patches.
    patches: usize,
}

/// Cuts the encoder's output, which runs across slide boundaries, back into slides in the
/// order their patches were queued.
struct SlideRows<'a> {
    /// (slide, its patches), in queue order.
    pending: &'a [(usize, Vec<usize>)],
    /// The slide being filled.
    current: usize,
    /// Its values so far.
    rows: Vec<f32>,
    features: usize,
}

impl<'a> SlideRows<'a> {
    fn new(pending: &'a [(usize, Vec<usize>)], features: usize) -> Self {
        let rows = Vec::with_capacity(pending.first().map_or(0, |(_, p)| p.len()) * features);
        Self {
            pending,
            current: 0,
            rows,
            features,
        }
    }

    /// Values the current slide still lacks.
    fn missing(&self) -> usize {
        self.pending
            .get(self.current)
            .map_or(0, |(_, p)| p.len() * self.features)
            .saturating_sub(self.rows.len())
    }

    /// Takes what the current slide lacks from `values`; returns the rest.
    fn fill<'v>(&mut self, values: &'v [f32]) -> TrainResult<&'v [f32]> {
        if self.current >= self.pending.len() {
            return Err(TrainError::Invalid(
                "the encoder returned more embeddings than there are patches".into(),
            ));
        }
        let (now, rest) = values.split_at(self.missing().min(values.len()));
        self.rows.extend_from_slice(now);
        Ok(rest)
    }

    /// Whether every slide has gone to the writer.
    fn all_handed_over(&self) -> bool {
        self.current >= self.pending.len()
    }

    /// Sends every complete slide to `finished` (slides without patches at once); false when
    /// the receiver is gone.
    fn hand_over(&mut self, finished: &mpsc::SyncSender<(usize, Vec<f32>)>) -> bool {
        while self.current < self.pending.len() && self.missing() == 0 {
            let slide = self.pending[self.current].0;
            if finished
                .send((slide, std::mem::take(&mut self.rows)))
                .is_err()
            {
                return false;
            }
            self.current += 1;
            if let Some((_, patches)) = self.pending.get(self.current) {
                self.rows = Vec::with_capacity(patches.len() * self.features);
            }
        }
        true
    }
}

/// Embeds every patch of every slide of `set` whose embeddings are not yet stored under the
/// encoder's key for `patches_hash`, in batches of `batch`. `progress` gets (slides done,
/// slides); a slide for which `live` answers false (withdrawn meanwhile) is not stored;
/// `cancel` stops between batches, keeping the slides stored (a rerun resumes there).
/// Runs on a blocking thread; `runtime` serves the store.
#[allow(clippy::too_many_arguments)]
pub fn extract(
    runtime: &tokio::runtime::Handle,
    store: &Store,
    set: &PatchSet,
    patches_hash: &str,
    encoder: &Encoder,
    batch: usize,
    progress: &(dyn Fn(usize, usize) + Sync),
    live: &(dyn Fn(&str) -> bool + Sync),
    cancel: &AtomicBool,
) -> TrainResult<ExtractReport> {
    let key = encoder.store_key(patches_hash);
    let mut report = ExtractReport {
        key: key.clone(),
        features: encoder.spec.vit.features(),
        ..Default::default()
    };
    let mut by_slide: Vec<Vec<usize>> = vec![Vec::new(); set.slides.len()];
    for (i, p) in set.patches.iter().enumerate() {
        by_slide[p.slide as usize].push(i);
    }
    let total = set.slides.len();
    let mut pending = Vec::new();
    for (slide, patches) in by_slide.into_iter().enumerate() {
        let object = ObjectPath::from(object_key(&key, &set.slides[slide].id));
        if runtime.block_on(store.head(&object)).is_ok() {
            report.reused += 1;
        } else {
            pending.push((slide, patches));
        }
    }
    progress(report.reused, total);
    let side = encoder.spec.preprocess.input_px;
    let (mean, std) = (encoder.spec.preprocess.mean, encoder.spec.preprocess.std);
    let features = report.features;
    // Batches run across slide boundaries, so every encoder call but the last is full.
    let chunks: Vec<Vec<usize>> = pending
        .iter()
        .flat_map(|(_, patches)| patches.iter().copied())
        .collect::<Vec<_>>()
        .chunks(batch.max(1))
        .map(<[usize]>::to_vec)
        .collect();
    let device = encoder_device(&encoder.model);
    let reused = report.reused;
    let (computed, encoded) = std::thread::scope(|scope| -> TrainResult<(usize, usize)> {
        // Decoding runs a batch or two ahead of the encoder on its own thread.
        let (send, receive) = mpsc::sync_channel::<TrainResult<Decoded>>(2);
        scope.spawn(move || {
            for chunk in chunks {
                let decoded = chunk
                    .par_iter()
                    .map(|&i| {
                        let rgb = decode_rgb(&set.jpeg(i)?, side)?;
                        Ok(normalise(&rgb, side as usize, mean, std))
                    })
                    .collect::<TrainResult<Vec<Vec<f32>>>>()
                    .map(|images| Decoded {
                        values: images.concat(),
                        patches: chunk.len(),
                    });
                if send.send(decoded).is_err() {
                    return;
                }
            }
        });
        // Finished slides are stored on a thread of their own, so the encoder does not wait on
        // the object store either.
        let (finished, to_store) = mpsc::sync_channel::<(usize, Vec<f32>)>(2);
        let key = &key;
        let writer = scope.spawn(move || -> TrainResult<(usize, usize)> {
            let (mut computed, mut encoded) = (0, 0);
            for (slide, rows) in to_store {
                let id = &set.slides[slide].id;
                if !live(id) {
                    tracing::info!(research_slide = %id, "withdrawn while embedding: not stored");
                    continue;
                }
                let patches = rows.len() / features.max(1);
                runtime.block_on(put_bytes(
                    store,
                    &object_key(key, id),
                    encode(patches, features, &rows),
                ))?;
                computed += 1;
                encoded += patches;
                progress(reused + computed, total);
            }
            Ok((computed, encoded))
        });
        let encoding = (|| -> TrainResult<()> {
            let mut slides = SlideRows::new(&pending, features);
            if !slides.hand_over(&finished) {
                return Ok(());
            }
            for decoded in receive {
                if cancel.load(Ordering::Relaxed) {
                    return Err(TrainError::Cancelled);
                }
                let decoded = decoded?;
                let images = Tensor::<1>::from_floats(decoded.values.as_slice(), &device)
                    .reshape([decoded.patches, 3, side as usize, side as usize]);
                let values: Vec<f32> = encoder
                    .model
                    .embed(images)
                    .into_data()
                    .try_into_vec::<f32>()
                    .map_err(|e| TrainError::Invalid(format!("embeddings: {e:?}")))?;
                // Rows out of step with the patches would be stored under another slide's name.
                if values.len() != decoded.patches * features {
                    return Err(TrainError::Invalid(format!(
                        "the encoder returned {} values for {} patches of {features}",
                        values.len(),
                        decoded.patches
                    )));
                }
                let mut values = values.as_slice();
                while !values.is_empty() {
                    values = slides.fill(values)?;
                    if !slides.hand_over(&finished) {
                        // The writer stopped; its error is the one to report.
                        return Ok(());
                    }
                }
                if writer.is_finished() {
                    // It stopped on a store error: no point embedding what it cannot keep.
                    return Ok(());
                }
            }
            if !slides.all_handed_over() {
                return Err(TrainError::Invalid(
                    "the encoder returned fewer embeddings than there are patches".into(),
                ));
            }
            Ok(())
        })();
        drop(finished);
        let stored = writer
            .join()
            .map_err(|_| TrainError::Invalid("the embedding writer panicked".into()))?;
        // A store failure is the cause of whatever the encoder met after it.
        let stored = stored?;
        encoding?;
        Ok(stored)
    })?;
    report.computed = computed;
    report.encoded = encoded;
    tracing::info!(
        key = %report.key,
        computed = report.computed,
        reused = report.reused,
        encoded = report.encoded,
        "embedded patches"
    );
    Ok(report)
}

fn encoder_device(model: &Vit) -> Device {
    use burn::module::Module as _;
    model
        .devices()
        .into_iter()
        .next()
        .unwrap_or_else(Device::flex)
}

/// HWC RGB in [0, 1] to CHW normalised by an encoder's constants.
pub fn normalise(rgb: &[f32], side: usize, mean: [f32; 3], std: [f32; 3]) -> Vec<f32> {
    let plane = side * side;
    let mut out = vec![0f32; 3 * plane];
    for (p, px) in rgb.chunks_exact(3).enumerate() {
        for c in 0..3 {
            out[c * plane + p] = (px[c] - mean[c]) / std[c];
        }
    }
    out
}

/// The stored embeddings of every slide of `set` under `key` as bags of at most [`MAX_BAG`]
/// patches (evenly sampled), and their width. Slides in `withdrawn` (opted out since the
/// version was built, their embeddings deleted) are left out; any other slide that was never
/// extracted is refused.
pub fn bags(
    runtime: &tokio::runtime::Handle,
    store: &Store,
    set: &PatchSet,
    key: &str,
    withdrawn: &std::collections::HashSet<String>,
) -> TrainResult<(Vec<Bag>, usize)> {
    let mut bags = Vec::with_capacity(set.slides.len());
    let mut width = 0;
    for (slide, entry) in set.slides.iter().enumerate() {
        if withdrawn.contains(&entry.id) {
            continue;
        }
        let object = object_key(key, &entry.id);
        let bytes = runtime.block_on(get_bytes(store, &object)).map_err(|e| {
            TrainError::Invalid(format!(
                "no embeddings of research slide {} under {key}: extract them first ({e})",
                entry.id
            ))
        })?;
        let (rows, features, values) = decode(&bytes, &object)?;
        if rows == 0 {
            continue;
        }
        if features == 0 || (width != 0 && features != width) {
            return Err(TrainError::Invalid(format!(
                "embedding object {object} is {features} wide where the others are {width}"
            )));
        }
        width = features;
        let keep: Vec<usize> = if rows > MAX_BAG {
            let step = rows as f64 / MAX_BAG as f64;
            (0..MAX_BAG).map(|k| (k as f64 * step) as usize).collect()
        } else {
            (0..rows).collect()
        };
        let embeddings = keep
            .iter()
            .flat_map(|&r| values[r * features..(r + 1) * features].iter().copied())
            .collect();
        bags.push(Bag {
            slide,
            embeddings,
            patches: keep.len(),
        });
    }
    Ok((bags, width))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedding_objects_round_trip_and_refuse_a_wrong_size() {
        let values: Vec<f32> = (0..6).map(|v| v as f32 * 0.5).collect();
        let bytes = encode(2, 3, &values);
        let decoded = decode(&bytes, "x").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(decoded, (2, 3, values));
        let e = decode(&bytes[..bytes.len() - 4], "x")
            .err()
            .map(|e| e.to_string());
        assert!(e.is_some_and(|e| e.contains("does not match")));
        assert!(decode(b"not one", "x").is_err());
    }

    #[test]
    fn batches_across_slides_come_back_as_each_slides_own_rows() {
        // Slides of 3, 0, 2 and 0 patches, two features each, arriving in batches of 2.
        let pending = vec![
            (4, vec![0, 1, 2]),
            (7, vec![]),
            (1, vec![3, 4]),
            (9, vec![]),
        ];
        let (finished, stored) = mpsc::sync_channel(8);
        let mut slides = SlideRows::new(&pending, 2);
        assert!(slides.hand_over(&finished));
        let values: Vec<f32> = (0..10).map(|v| v as f32).collect();
        for batch in values.chunks(4) {
            let mut rest = batch;
            while !rest.is_empty() {
                rest = slides.fill(rest).unwrap_or_else(|e| panic!("{e}"));
                assert!(slides.hand_over(&finished));
            }
        }
        drop(finished);
        let got: Vec<(usize, Vec<f32>)> = stored.into_iter().collect();
        assert_eq!(
            got,
            vec![
                (4, vec![0.0, 1.0, 2.0, 3.0, 4.0, 5.0]),
                (7, vec![]),
                (1, vec![6.0, 7.0, 8.0, 9.0]),
                (9, vec![]),
            ]
        );
        assert!(slides.all_handed_over());
        // One value too many is an error, not a row of a slide that does not exist.
        assert!(slides.fill(&[1.0]).is_err());
    }
}
