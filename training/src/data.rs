//! Training data from a dataset version's patch shards: the manifest says which research
//! slides are in which split with which label, the extraction block says where their shards
//! are. Shard `.bin` files are fetched once into a local cache (so a GPU node reads from its
//! own disk) and patches are read by byte range on demand, keeping memory flat whatever the
//! dataset's size.

use std::collections::{BTreeSet, HashMap};
use std::fs::File;
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};

use pathfed_core::store::{Store, get_bytes, get_to_file};
use pathfed_datasets::manifest::Manifest;
use pathfed_datasets::patches::{ShardIndex, shard_keys};
use rand::SeedableRng as _;
use rand::rngs::StdRng;
use rand::seq::SliceRandom as _;
use serde::{Deserialize, Serialize};

use crate::error::{TrainError, TrainResult};

/// The three splits, in manifest order.
pub const SPLITS: [&str; 3] = ["train", "val", "test"];

/// A research slide of the version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SlideRef {
    /// Research slide id.
    pub id: String,
    /// Research patient id.
    pub patient: String,
    /// Class index of the slide-level label.
    pub label: usize,
    /// "train", "val" or "test".
    pub split: String,
}

/// A patch: where its JPEG lies and what it is labelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PatchRef {
    /// Index into [`PatchSet::slides`].
    pub slide: u32,
    /// Class index.
    pub label: u32,
    /// Byte offset in the slide's shard file.
    pub offset: u64,
    /// JPEG length.
    pub length: u32,
}

/// Every patch of a version, with its classes, readable from the local shard cache.
#[derive(Debug, Clone)]
pub struct PatchSet {
    /// Class names (taxonomy codes), sorted; a class index is a position here.
    pub classes: Vec<String>,
    /// The version's slides.
    pub slides: Vec<SlideRef>,
    /// Every patch.
    pub patches: Vec<PatchRef>,
    /// Patch side in pixels as extracted.
    pub patch_px: u32,
    files: Vec<PathBuf>,
}

/// The largest JPEG a patch may take (a 1024 px patch is far below this).
const MAX_PATCH_BYTES: u64 = 16 << 20;

impl PatchSet {
    /// Loads the shards of `manifest` from `store` into `cache` (kept between runs, keyed by
    /// parameter hash and slide). `progress` gets (slides done, slides).
    pub async fn fetch(
        store: &Store,
        manifest: &Manifest,
        cache: &Path,
        mut progress: impl FnMut(usize, usize),
    ) -> TrainResult<Self> {
        let reference = format!("{}@{}", manifest.dataset, manifest.version);
        let hash = manifest
            .content
            .extraction
            .as_ref()
            .and_then(|x| x["params_hash"].as_str())
            .ok_or_else(|| {
                TrainError::Invalid(format!(
                    "{reference} has no patches (built with --no-patches): build a version with patches"
                ))
            })?
            .to_string();
        let dir = cache.join(&hash);
        std::fs::create_dir_all(&dir)
            .map_err(|e| TrainError::io(format!("creating {}", dir.display()), e))?;

        let mut indexes = Vec::new();
        let total = manifest.content.slides.len();
        for (done, entry) in manifest.content.slides.iter().enumerate() {
            let id = &entry.slide.id;
            let (index_key, bin_key) = shard_keys(&hash, id);
            let index: ShardIndex = serde_json::from_slice(&get_bytes(store, &index_key).await?)
                .map_err(|e| TrainError::Invalid(format!("shard index {index_key}: {e}")))?;
            let file = dir.join(format!("{id}.bin"));
            let expected: u64 = index
                .patches
                .iter()
                .map(|p| p.offset + p.length)
                .max()
                .unwrap_or(0);
            let cached = std::fs::metadata(&file).map(|m| m.len()).unwrap_or(0);
            if cached < expected || expected == 0 && !file.exists() {
                let partial = dir.join(format!("{id}.bin.part"));
                get_to_file(store, &bin_key, &partial).await?;
                std::fs::rename(&partial, &file)
                    .map_err(|e| TrainError::io(format!("storing {}", file.display()), e))?;
            }
            indexes.push((entry, index, file));
            progress(done + 1, total);
        }

        let classes: Vec<String> = indexes
            .iter()
            .flat_map(|(entry, index, _)| {
                std::iter::once(entry.slide.label.clone())
                    .chain(index.patches.iter().map(|p| p.label.clone()))
            })
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let class_of: HashMap<&str, usize> = classes
            .iter()
            .enumerate()
            .map(|(i, c)| (c.as_str(), i))
            .collect();
        let mut set = Self {
            classes: classes.clone(),
            slides: Vec::new(),
            patches: Vec::new(),
            patch_px: indexes.first().map(|(_, i, _)| i.patch_px).unwrap_or(0),
            files: Vec::new(),
        };
        for (slide, (entry, index, file)) in indexes.iter().enumerate() {
            set.slides.push(SlideRef {
                id: entry.slide.id.clone(),
                patient: entry.slide.patient.clone(),
                label: class_of[entry.slide.label.as_str()],
                split: entry.split.clone(),
            });
            for p in &index.patches {
                if p.length == 0 || p.length > MAX_PATCH_BYTES {
                    return Err(TrainError::Invalid(format!(
                        "shard of {}: a patch of {} bytes",
                        entry.slide.id, p.length
                    )));
                }
                set.patches.push(PatchRef {
                    slide: slide as u32,
                    label: class_of[p.label.as_str()] as u32,
                    offset: p.offset,
                    length: p.length as u32,
                });
            }
            set.files.push(file.clone());
        }
        Ok(set)
    }

    /// Indices of the patches in `split`.
    pub fn split(&self, split: &str) -> Vec<usize> {
        (0..self.patches.len())
            .filter(|&i| self.slides[self.patches[i].slide as usize].split == split)
            .collect()
    }

    /// Slides per class in `split`.
    pub fn slide_counts(&self, split: &str) -> Vec<usize> {
        let mut counts = vec![0; self.classes.len()];
        for s in self.slides.iter().filter(|s| s.split == split) {
            counts[s.label] += 1;
        }
        counts
    }

    /// Control runs: shuffles the labels of the training patches among themselves, so a label
    /// says nothing about the pixels it comes with. A pipeline that learns from this anything
    /// that carries over to the test split leaks labels some other way.
    pub fn shuffle_train_labels(&mut self, seed: u64) {
        let train = self.split("train");
        let mut labels: Vec<u32> = train.iter().map(|&i| self.patches[i].label).collect();
        labels.shuffle(&mut StdRng::seed_from_u64(seed));
        for (&i, &label) in train.iter().zip(&labels) {
            self.patches[i].label = label;
        }
    }

    /// The control for slide-level heads: the training split's slide labels permuted among its
    /// slides (each slide's patches follow their slide), so a head can learn nothing real.
    pub fn shuffle_train_slide_labels(&mut self, seed: u64) {
        let train: Vec<usize> = (0..self.slides.len())
            .filter(|&s| self.slides[s].split == "train")
            .collect();
        let mut labels: Vec<usize> = train.iter().map(|&s| self.slides[s].label).collect();
        labels.shuffle(&mut StdRng::seed_from_u64(seed));
        for (&s, &label) in train.iter().zip(&labels) {
            self.slides[s].label = label;
        }
        for patch in &mut self.patches {
            patch.label = self.slides[patch.slide as usize].label as u32;
        }
    }

    /// The JPEG bytes of patch `i`.
    pub fn jpeg(&self, i: usize) -> TrainResult<Vec<u8>> {
        let p = self
            .patches
            .get(i)
            .ok_or_else(|| TrainError::Invalid(format!("no patch {i}")))?;
        let path = &self.files[p.slide as usize];
        let file = File::open(path)
            .map_err(|e| TrainError::io(format!("opening {}", path.display()), e))?;
        let mut buf = vec![0; p.length as usize];
        file.read_exact_at(&mut buf, p.offset)
            .map_err(|e| TrainError::io(format!("reading {}", path.display()), e))?;
        Ok(buf)
    }

    /// Patch `i` decoded as interleaved RGB in 0–1, resized to `side` × `side` if needed.
    pub fn rgb(&self, i: usize, side: u32) -> TrainResult<Vec<f32>> {
        let jpeg = self.jpeg(i)?;
        decode_rgb(&jpeg, side)
    }
}

/// Decodes a JPEG patch to `side` × `side` interleaved RGB in 0–1.
pub fn decode_rgb(jpeg: &[u8], side: u32) -> TrainResult<Vec<f32>> {
    let image = image::load_from_memory_with_format(jpeg, image::ImageFormat::Jpeg)
        .map_err(|e| TrainError::Invalid(format!("patch JPEG: {e}")))?
        .to_rgb8();
    let image = if image.dimensions() == (side, side) {
        image
    } else {
        image::imageops::resize(&image, side, side, image::imageops::FilterType::Triangle)
    };
    Ok(image
        .into_raw()
        .into_iter()
        .map(|v| f32::from(v) / 255.0)
        .collect())
}
