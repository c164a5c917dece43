//! Patches as Burn sees them: a [`Dataset`] over one split of a [`PatchSet`] and a batcher
//! that normalises them into image tensors.
//!
//! Order and augmentation are ours, not the data loader's, so that a run is a pure function
//! of its seed and a resumed run sees exactly the batches an uninterrupted one would: each
//! epoch's order is a permutation drawn from (seed, epoch), each patch's augmentation from
//! (seed, epoch, position). The loader itself runs unshuffled with no worker threads (Burn's
//! workers would reorder batches); instead a batch's patches are read and decoded in parallel,
//! and the next batch is prefetched in the background while the model works on this one —
//! its positions are known, since the loader reads an epoch in order.

use std::sync::Arc;
use std::sync::Mutex;

use burn::data::dataloader::batcher::Batcher;
use burn::data::dataset::{Dataset, DatasetError};
use burn::prelude::*;
use pathfed_models::model::{MEAN, STD};
use pathfed_models::step::PatchBatch;
use rand::SeedableRng as _;
use rand::rngs::StdRng;
use rand::seq::SliceRandom as _;
use rayon::prelude::*;

use crate::augment::Augment;
use crate::data::PatchSet;

/// One decoded patch.
#[derive(Debug, Clone)]
pub struct PatchItem {
    /// Interleaved RGB in 0–1, `side`×`side`.
    pub rgb: Vec<f32>,
    /// Class index.
    pub label: u32,
    /// Index of the patch in the [`PatchSet`].
    pub patch: usize,
}

/// What decodes and augments patches: cheap to clone into a prefetching task.
#[derive(Clone)]
struct Reader {
    set: Arc<PatchSet>,
    side: u32,
    augment: Augment,
    seed: u64,
}

impl Reader {
    fn item(&self, epoch: u64, position: usize, patch: usize) -> Result<PatchItem, DatasetError> {
        let mut rgb = self.set.rgb(patch, self.side).map_err(DatasetError::new)?;
        let mut rng = StdRng::seed_from_u64(mix(self.seed, epoch, position as u64));
        self.augment.apply(&mut rgb, self.side as usize, &mut rng);
        Ok(PatchItem {
            rgb,
            label: self.set.patches[patch].label,
            patch,
        })
    }

    fn items(
        &self,
        epoch: u64,
        positions: &[usize],
        patches: &[usize],
    ) -> Result<Vec<PatchItem>, DatasetError> {
        positions
            .par_iter()
            .zip(patches.par_iter())
            .map(|(&position, &patch)| self.item(epoch, position, patch))
            .collect()
    }
}

/// A batch being decoded ahead of its read.
struct Prefetch {
    epoch: u64,
    positions: Vec<usize>,
    result: std::sync::mpsc::Receiver<Result<Vec<PatchItem>, DatasetError>>,
}

/// A split of a patch set as an epoch-aware, seeded dataset.
pub struct SplitDataset {
    reader: Reader,
    patches: Vec<usize>,
    /// Shuffle per epoch (training); evaluation keeps the stored order.
    shuffle: bool,
    /// (epoch, order) of the epoch being read.
    epoch: Mutex<(u64, Arc<Vec<usize>>)>,
    /// The batch expected next, decoding in the background.
    prefetch: Mutex<Option<Prefetch>>,
}

impl SplitDataset {
    /// `patches` of `set`, read at `side` px. `first_epoch` is 1 for a new run and k+1 when
    /// resuming after epoch k.
    pub fn new(
        set: Arc<PatchSet>,
        patches: Vec<usize>,
        side: u32,
        augment: Augment,
        shuffle: bool,
        seed: u64,
        first_epoch: u64,
    ) -> Self {
        Self {
            reader: Reader {
                set,
                side,
                augment,
                seed,
            },
            patches,
            shuffle,
            // The first read of position 0 moves this to `first_epoch`.
            epoch: Mutex::new((first_epoch.saturating_sub(1), Arc::new(Vec::new()))),
            prefetch: Mutex::new(None),
        }
    }

    fn order(&self, epoch: u64) -> Vec<usize> {
        let mut order = self.patches.clone();
        if self.shuffle {
            order.shuffle(&mut StdRng::seed_from_u64(mix(
                self.reader.seed,
                epoch,
                u64::MAX,
            )));
        }
        order
    }

    /// Starts decoding the read expected after `positions` of `epoch`: the next positions of
    /// the same size, or the start of the next epoch.
    fn prefetch_after(&self, epoch: u64, positions: &[usize], order: &Arc<Vec<usize>>) {
        let (Some(&last), n) = (positions.last(), positions.len()) else {
            return;
        };
        let len = self.patches.len();
        let (epoch, next, order) = if last + 1 < len {
            (
                epoch,
                (last + 1..(last + 1 + n).min(len)).collect::<Vec<_>>(),
                order.clone(),
            )
        } else {
            (
                epoch + 1,
                (0..n.min(len)).collect(),
                Arc::new(self.order(epoch + 1)),
            )
        };
        let patches: Vec<usize> = next.iter().map(|&p| order[p]).collect();
        let (sender, result) = std::sync::mpsc::sync_channel(1);
        let reader = self.reader.clone();
        let positions = next.clone();
        rayon::spawn(move || {
            let _ = sender.send(reader.items(epoch, &positions, &patches));
        });
        if let Ok(mut slot) = self.prefetch.lock() {
            *slot = Some(Prefetch {
                epoch,
                positions: next,
                result,
            });
        }
    }

    /// The epoch and patch order for reading `positions`; a read starting at 0 opens the next
    /// epoch (the loader reads each epoch from position 0 upwards).
    fn epoch_for(&self, positions: &[usize]) -> (u64, Vec<usize>, Arc<Vec<usize>>) {
        let mut state = self.epoch.lock().unwrap_or_else(|e| e.into_inner());
        if positions.first() == Some(&0) || state.1.is_empty() {
            state.0 += 1;
            state.1 = Arc::new(self.order(state.0));
        }
        let patches = positions.iter().map(|&p| state.1[p]).collect();
        (state.0, patches, state.1.clone())
    }
}

/// A 64-bit mix of three numbers (SplitMix64 steps), for per-item seeds.
fn mix(a: u64, b: u64, c: u64) -> u64 {
    let mut z = a ^ b.rotate_left(21) ^ c.rotate_left(42);
    for _ in 0..2 {
        z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
    }
    z
}

impl Dataset<PatchItem> for SplitDataset {
    fn get(&self, index: usize) -> Result<PatchItem, DatasetError> {
        let (epoch, patches, _) = self.epoch_for(&[index]);
        self.reader.item(epoch, index, patches[0])
    }

    fn get_many(&self, indexes: Vec<usize>) -> Result<Vec<PatchItem>, DatasetError> {
        let (epoch, patches, order) = self.epoch_for(&indexes);
        let ready = self
            .prefetch
            .lock()
            .ok()
            .and_then(|mut slot| slot.take())
            .filter(|p| p.epoch == epoch && p.positions == indexes)
            .and_then(|p| p.result.recv().ok());
        let items = match ready {
            Some(items) => items,
            None => self.reader.items(epoch, &indexes, &patches),
        };
        self.prefetch_after(epoch, &indexes, &order);
        items
    }

    fn len(&self) -> usize {
        self.patches.len()
    }
}

/// Stacks patches into a normalised `[B, 3, side, side]` tensor.
#[derive(Debug, Clone)]
pub struct PatchBatcher {
    /// Patch side in pixels.
    pub side: u32,
}

impl Batcher<PatchItem, PatchBatch> for PatchBatcher {
    fn batch(&self, items: Vec<PatchItem>, device: &Device) -> PatchBatch {
        let n = items.len();
        let plane = (self.side * self.side) as usize;
        let mut data = vec![0f32; n * 3 * plane];
        for (b, item) in items.iter().enumerate() {
            for (p, px) in item.rgb.chunks_exact(3).enumerate().take(plane) {
                for c in 0..3 {
                    data[(b * 3 + c) * plane + p] = (px[c] - MEAN[c]) / STD[c];
                }
            }
        }
        let side = self.side as usize;
        let images = Tensor::<4>::from_data(TensorData::new(data, [n, 3, side, side]), device);
        let labels: Vec<i64> = items.iter().map(|i| i64::from(i.label)).collect();
        let targets = Tensor::<1, Int>::from_data(TensorData::new(labels, [n]), device);
        PatchBatch {
            images,
            targets,
            patches: items.iter().map(|i| i.patch).collect(),
        }
    }
}
