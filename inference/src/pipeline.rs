//! Slide inference: tissue detection → the MPP-aware patch grid the model was trained at →
//! patches read and decoded by reader threads → batches → the model → per-patch
//! probabilities → the slide's scores through the model's aggregator.
//!
//! The three stages are threads joined by bounded channels: readers decode the next patches
//! and a batcher normalises them while the model runs on the previous batch, so the model does
//! not wait on I/O and memory stays at a few batches whatever the slide's size. Cancellation
//! and the first error stop every stage.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use burn::prelude::*;
use pathfed_models::aggregate::{Aggregation, Aggregator};
use pathfed_models::mil::MAX_BAG;
use pathfed_models::registry::{Backbone, InferenceConfig, ModelFiles};
use pathfed_slide::SlideReader;
use pathfed_slide::resize::{Rect, read_scaled};
use pathfed_slide::tissue::{self, Grid, GridCell, GridParams, TissueParams};

use crate::error::{InferError, InferResult};
use crate::heatmap::ScoreMap;

/// A model ready to run on slides.
pub struct PatchModel {
    /// Classes, aggregation, threshold and patch geometry.
    pub config: InferenceConfig,
    /// The patch network: a CNN classifier or a frozen encoder.
    pub model: Backbone,
    /// The attention head, when the model aggregates by attention (an encoder's head).
    pub aggregator: Option<Aggregator>,
    /// Where it runs.
    pub device: Device,
}

impl PatchModel {
    /// Builds the model from its files on `device`, an encoder's weights from `pretrained`;
    /// `what` names it in errors.
    pub fn from_files(
        files: ModelFiles,
        what: &str,
        pretrained: &std::path::Path,
        device: Device,
    ) -> InferResult<Self> {
        let (config, model, aggregator) = files.build(what, pretrained, &device)?;
        Ok(Self {
            config,
            model,
            aggregator,
            device,
        })
    }

    /// Index of the positive class.
    pub fn positive_index(&self) -> usize {
        self.config
            .classes
            .iter()
            .position(|c| *c == self.config.positive)
            .unwrap_or(0)
    }

    /// Per-patch class probabilities of a normalised batch `[n, 3, side, side]`, and the
    /// embeddings the attention head pools when there is one. An encoder's patches are scored
    /// by its head, each patch as a bag of its own.
    fn run_batch(&self, images: Tensor<4>) -> InferResult<(Vec<f32>, Option<Vec<f32>>)> {
        match (&self.model, &self.aggregator) {
            (Backbone::Cnn(cnn), Some(_)) => {
                let (embedded, probs) = cnn.embed_and_classify(images);
                Ok((floats(probs)?, Some(floats(embedded)?)))
            }
            (Backbone::Cnn(cnn), None) => Ok((floats(cnn.probabilities(images))?, None)),
            (Backbone::Encoder(vit), Some(head)) => {
                let embedded = vit.embed(images);
                let probs = head.head.instance_probabilities(embedded.clone());
                Ok((floats(probs)?, Some(floats(embedded)?)))
            }
            (Backbone::Encoder(_), None) => Err(InferError::Invalid(
                "an encoder model without its head cannot score patches".into(),
            )),
        }
    }
}

/// How a slide is run.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Patches per model call.
    pub batch: usize,
    /// Reader threads (0: half the cores, at least one).
    pub readers: usize,
    /// Tissue detection.
    pub tissue: TissueParams,
    /// Share of a patch that must be tissue.
    pub min_tissue: f64,
    /// Share of pen ink above which a patch is skipped.
    pub max_pen: f64,
}

impl Default for RunOptions {
    fn default() -> Self {
        let grid = GridParams::default();
        Self {
            batch: 32,
            readers: 0,
            tissue: TissueParams::default(),
            min_tissue: grid.min_tissue,
            max_pen: grid.max_pen,
        }
    }
}

/// What a model made of a slide.
#[derive(Debug, Clone)]
pub struct SlidePrediction {
    /// The positive class's probability per patch, on the patch grid.
    pub map: ScoreMap,
    /// Per class, the slide-level probability (the aggregator's for the positive class).
    pub class_scores: Vec<f64>,
    /// The positive class's slide score.
    pub score: f64,
    /// The class the model calls: the positive one at or above the threshold, else the most
    /// probable other class.
    pub predicted: String,
    /// Share of the slide the tissue mask covers.
    pub tissue_fraction: f64,
    /// Patches scored.
    pub patches: usize,
    /// Wall-clock seconds, end to end.
    pub seconds: f64,
    /// Seconds spent in the model (tensor in, probabilities out).
    pub model_seconds: f64,
    /// The grid's real resolution (µm/px), after rounding the footprint to whole pixels.
    pub grid_mpp: f64,
}

/// One batch on its way to the model: grid cell indices and normalised `[B, 3, side, side]`.
struct Batch {
    cells: Vec<usize>,
    pixels: Vec<f32>,
}

/// Runs `model` over `reader`'s tissue. `progress` gets (patches done, total); setting `cancel`
/// stops the run with [`InferError::Cancelled`].
pub fn predict_slide(
    reader: &dyn SlideReader,
    model: &PatchModel,
    options: &RunOptions,
    progress: &(dyn Fn(usize, usize) + Sync),
    cancel: &AtomicBool,
) -> InferResult<SlidePrediction> {
    let started = Instant::now();
    let config = &model.config;
    let (tissue_fraction, grid) = plan(reader, config, options)?;
    let cells = grid.cells.len();
    let classes = config.classes.len();
    let side = config.input_px() as usize;
    let (mean, std) = config.normalisation();
    // Attention pools at most MAX_BAG embeddings, evenly sampled, as in training.
    let bag: Vec<Option<usize>> = bag_slots(cells, model.aggregator.is_some());
    let mut probabilities = vec![0f32; cells * classes];
    let mut embeddings: Vec<Vec<f32>> = vec![Vec::new(); bag.iter().flatten().count()];
    let mut model_seconds = 0.0;
    let failure: Mutex<Option<InferError>> = Mutex::new(None);
    let stop = AtomicBool::new(false);
    let stopped = || stop.load(Ordering::Relaxed) || cancel.load(Ordering::Relaxed);
    let fail = |e: InferError| {
        let mut slot = failure.lock().unwrap_or_else(|p| p.into_inner());
        slot.get_or_insert(e);
        stop.store(true, Ordering::Relaxed);
    };
    let readers = if options.readers == 0 {
        std::thread::available_parallelism().map_or(1, |n| (n.get() / 2).max(1))
    } else {
        options.readers
    };
    let batch_size = options.batch.max(1);

    std::thread::scope(|scope| {
        let (patch_tx, patch_rx) = sync_channel::<(usize, Vec<u8>)>(batch_size * 2);
        let (batch_tx, batch_rx) = sync_channel::<Batch>(2);
        let next = Arc::new(AtomicUsize::new(0));
        for _ in 0..readers {
            let (tx, next) = (patch_tx.clone(), next.clone());
            let (grid, fail, stopped) = (&grid, &fail, &stopped);
            scope.spawn(move || {
                while !stopped() {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= cells {
                        break;
                    }
                    match read_patch(reader, grid, &grid.cells[i], config) {
                        Ok(rgb) => {
                            if tx.send((i, rgb)).is_err() {
                                break;
                            }
                        }
                        Err(e) => {
                            fail(e);
                            break;
                        }
                    }
                }
            });
        }
        drop(patch_tx);
        scope.spawn(move || batcher(patch_rx, batch_tx, batch_size, side, (mean, std)));

        let mut done = 0;
        while let Ok(batch) = batch_rx.recv() {
            if stopped() {
                break;
            }
            let clock = Instant::now();
            let n = batch.cells.len();
            let images = Tensor::<4>::from_data(
                TensorData::new(batch.pixels, [n, 3, side, side]),
                &model.device,
            );
            let run = model.run_batch(images);
            model_seconds += clock.elapsed().as_secs_f64();
            let (probs, embedded) = match run {
                Ok(out) if out.0.iter().all(|p| p.is_finite()) => out,
                Ok(_) => {
                    fail(InferError::Invalid(
                        "the model gave probabilities that are not numbers: its weights are unusable"
                            .into(),
                    ));
                    break;
                }
                Err(e) => {
                    fail(e);
                    break;
                }
            };
            let features = embedded.as_ref().map_or(0, |e| e.len() / n.max(1));
            for (k, &cell) in batch.cells.iter().enumerate() {
                probabilities[cell * classes..(cell + 1) * classes]
                    .copy_from_slice(&probs[k * classes..(k + 1) * classes]);
                if let (Some(slot), Some(e)) = (bag[cell], &embedded) {
                    embeddings[slot] = e[k * features..(k + 1) * features].to_vec();
                }
            }
            done += n;
            progress(done, cells);
        }
        // Dropping the receiver makes the batcher's next send fail, which stops the readers.
        drop(batch_rx);
    });

    if let Some(e) = failure.into_inner().unwrap_or_else(|p| p.into_inner()) {
        return Err(e);
    }
    if cancel.load(Ordering::Relaxed) {
        return Err(InferError::Cancelled);
    }
    let class_scores = slide_scores(model, &probabilities, &embeddings)?;
    let positive = model.positive_index();
    let score = class_scores[positive];
    let predicted = if score >= config.threshold {
        config.positive.clone()
    } else {
        (0..classes)
            .filter(|&c| c != positive)
            .max_by(|&a, &b| class_scores[a].total_cmp(&class_scores[b]))
            .map_or_else(|| config.positive.clone(), |c| config.classes[c].clone())
    };
    let map = score_map(reader, &grid, &probabilities, classes, positive);
    Ok(SlidePrediction {
        map,
        class_scores,
        score,
        predicted,
        tissue_fraction,
        patches: cells,
        seconds: started.elapsed().as_secs_f64(),
        model_seconds,
        grid_mpp: grid.actual_mpp.0,
    })
}

/// Tissue detection and the patch grid at the model's resolution: the tissue fraction and
/// the grid, which is never empty.
fn plan(
    reader: &dyn SlideReader,
    config: &InferenceConfig,
    options: &RunOptions,
) -> InferResult<(f64, Grid)> {
    let mask = tissue::detect(reader, &options.tissue)?;
    let grid = tissue::grid(
        reader.properties(),
        &mask,
        &GridParams {
            patch_px: config.patch_px,
            patch_mpp: config.patch_mpp,
            min_tissue: options.min_tissue,
            max_pen: options.max_pen,
            mpp_tolerance: config.mpp_tolerance,
        },
    )?;
    if grid.cells.is_empty() {
        return Err(InferError::NoTissue {
            mpp: config.patch_mpp,
            fraction: mask.tissue_fraction(),
        });
    }
    Ok((mask.tissue_fraction(), grid))
}

/// Every patch [`predict_slide`] would read, in grid order, decoded and resized to the
/// model's input: for measuring the model alone on the same patches ([`compute_only`]).
pub fn slide_patches(
    reader: &dyn SlideReader,
    config: &InferenceConfig,
    options: &RunOptions,
) -> InferResult<Vec<Vec<u8>>> {
    let (_, grid) = plan(reader, config, options)?;
    grid.cells
        .iter()
        .map(|cell| read_patch(reader, &grid, cell, config))
        .collect()
}

/// For each grid cell, its slot in the attention bag (if it is in it).
fn bag_slots(cells: usize, attention: bool) -> Vec<Option<usize>> {
    let mut slots = vec![None; cells];
    if !attention {
        return slots;
    }
    let kept = cells.min(MAX_BAG);
    let step = cells as f64 / kept as f64;
    for k in 0..kept {
        slots[(k as f64 * step) as usize] = Some(k);
    }
    slots
}

/// Collects decoded patches into normalised batches (the layout and statistics the network was
/// trained with: ImageNet's for a CNN, the encoder's own for an encoder).
fn batcher(
    patches: Receiver<(usize, Vec<u8>)>,
    out: SyncSender<Batch>,
    size: usize,
    side: usize,
    (mean, std): ([f32; 3], [f32; 3]),
) {
    let plane = side * side;
    let fresh = || Batch {
        cells: Vec::with_capacity(size),
        pixels: Vec::with_capacity(size * 3 * plane),
    };
    let mut batch = fresh();
    for (cell, rgb) in patches {
        normalise(&rgb, plane, (mean, std), &mut batch.pixels);
        batch.cells.push(cell);
        if batch.cells.len() == size && out.send(std::mem::replace(&mut batch, fresh())).is_err() {
            return;
        }
    }
    if !batch.cells.is_empty() {
        let _ = out.send(batch);
    }
}

/// Appends interleaved RGB `rgb` of `plane` pixels as three planes normalised by `mean`, `std`.
fn normalise(rgb: &[u8], plane: usize, (mean, std): ([f32; 3], [f32; 3]), out: &mut Vec<f32>) {
    let start = out.len();
    out.resize(start + 3 * plane, 0.0);
    let planes = &mut out[start..];
    for (p, px) in rgb.chunks_exact(3).enumerate().take(plane) {
        for c in 0..3 {
            planes[c * plane + p] = (f32::from(px[c]) / 255.0 - mean[c]) / std[c];
        }
    }
}

/// Reads one patch as the research tier cut it for training: the grid's footprint from its
/// level, resampled to `patch_px`, then to the model's input size if that differs.
fn read_patch(
    reader: &dyn SlideReader,
    grid: &Grid,
    cell: &GridCell,
    config: &InferenceConfig,
) -> InferResult<Vec<u8>> {
    let (lx, ly) = (
        cell.x as f64 / grid.level_downsample.0,
        cell.y as f64 / grid.level_downsample.1,
    );
    let rect = Rect {
        x0: lx,
        y0: ly,
        x1: lx + grid.read_size.0,
        y1: ly + grid.read_size.1,
    };
    let side = config.patch_px;
    let image = read_scaled(reader, grid.level, rect, side, side)?;
    let input = config.input_px();
    let image = if input == side {
        image
    } else {
        image::imageops::resize(&image, input, input, image::imageops::FilterType::Triangle)
    };
    Ok(image.into_raw())
}

fn floats<const D: usize>(tensor: Tensor<D>) -> InferResult<Vec<f32>> {
    tensor
        .into_data()
        .try_into_vec::<f32>()
        .map_err(|e| InferError::Invalid(format!("model output: {e:?}")))
}

/// Slide-level probability per class: the mean over patches, the positive class through the
/// model's aggregation (top-k), or every class from the attention head.
fn slide_scores(
    model: &PatchModel,
    probabilities: &[f32],
    embeddings: &[Vec<f32>],
) -> InferResult<Vec<f64>> {
    let classes = model.config.classes.len();
    let positive = model.positive_index();
    if let Some(head) = &model.aggregator {
        let features = head.config.features;
        let rows = embeddings.len();
        let flat: Vec<f32> = embeddings.concat();
        if rows == 0 || flat.len() != rows * features {
            return Err(InferError::Invalid(format!(
                "attention head expects {features} features per patch"
            )));
        }
        let bag =
            Tensor::<1>::from_floats(flat.as_slice(), &model.device).reshape([rows, features]);
        let probs = floats(head.head.probabilities(bag))?;
        return Ok(probs.into_iter().map(f64::from).collect());
    }
    let per_class = |c: usize| -> Vec<f64> {
        probabilities
            .chunks_exact(classes)
            .map(|p| f64::from(p[c]))
            .collect()
    };
    Ok((0..classes)
        .map(|c| {
            let mut values = per_class(c);
            if c == positive {
                model.config.aggregation.apply(&mut values)
            } else {
                Aggregation::Mean.apply(&mut values)
            }
        })
        .collect())
}

fn score_map(
    reader: &dyn SlideReader,
    grid: &Grid,
    probabilities: &[f32],
    classes: usize,
    positive: usize,
) -> ScoreMap {
    let (width, height) = reader.properties().dimensions();
    let (fx, fy) = grid.footprint;
    ScoreMap {
        width,
        height,
        cell: grid.footprint,
        cols: width / fx,
        rows: height / fy,
        cells: grid
            .cells
            .iter()
            .enumerate()
            .map(|(i, c)| {
                (
                    (c.x / fx) as u32,
                    (c.y / fy) as u32,
                    probabilities[i * classes + positive],
                )
            })
            .collect(),
    }
}

/// The model's compute alone on patches already in memory: the reference `pathfed bench
/// infer` compares the end-to-end run with. `patches` are `side`×`side` RGB; returns the
/// seconds spent in the model.
pub fn compute_only(model: &PatchModel, patches: &[Vec<u8>], batch: usize) -> InferResult<f64> {
    let side = model.config.input_px() as usize;
    let statistics = model.config.normalisation();
    let mut seconds = 0.0;
    for chunk in patches.chunks(batch.max(1)) {
        let mut pixels = Vec::with_capacity(chunk.len() * 3 * side * side);
        for rgb in chunk {
            normalise(rgb, side * side, statistics, &mut pixels);
        }
        let clock = Instant::now();
        let images = Tensor::<4>::from_data(
            TensorData::new(pixels, [chunk.len(), 3, side, side]),
            &model.device,
        );
        model.run_batch(images)?;
        seconds += clock.elapsed().as_secs_f64();
    }
    Ok(seconds)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_attention_bag_samples_evenly_and_at_most_its_size() {
        let slots = bag_slots(2000, true);
        let kept: Vec<usize> = slots.iter().flatten().copied().collect();
        assert_eq!(kept, (0..MAX_BAG).collect::<Vec<_>>());
        assert_eq!(slots[0], Some(0));
        assert!(slots[1].is_none());
        assert!(bag_slots(10, false).iter().all(Option::is_none));
        assert_eq!(bag_slots(10, true).iter().flatten().count(), 10);
    }
}
