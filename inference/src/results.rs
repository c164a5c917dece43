//! Stored AI results. Each (slide, model version) has `result.json` and `heatmap.png` under
//! `inference/{slide}/{model}/{version}/` and a row in `inference_results`, written last: the
//! row is the commit point, so a listed result is always complete, and its SHA-256 guards the
//! JSON. A rerun replaces both.

use std::collections::BTreeMap;

use pathfed_core::Platform;
use pathfed_core::contracts::slides;
use pathfed_core::db::now;
use pathfed_core::store::{delete_prefix, get_bytes, put_bytes};
use pathfed_models::registry::InferenceConfig;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use sqlx::Row as _;

use crate::error::{InferError, InferResult};
use crate::heatmap::{ScoreMap, heatmap_png};
use crate::pipeline::SlidePrediction;

/// Shown with every AI result, wherever it appears.
pub const NOTICE: &str = "Decision support only: this result comes from a machine-learning \
     model and is not a diagnosis. The pathologist's diagnosis decides.";

/// Highest-scoring regions listed with a result.
const REGIONS: usize = 5;

/// The model version a result came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelRef {
    /// Registry name.
    pub name: String,
    /// Version.
    pub version: i64,
    /// Architecture.
    pub architecture: String,
    /// Class codes, index order.
    pub classes: Vec<String>,
    /// The class whose probability is the slide score.
    pub positive: String,
    /// Threshold on the slide score.
    pub threshold: f64,
    /// Slide aggregation (`mean`, `top-k:K`, `attention`).
    pub aggregation: String,
    /// Patch side in pixels.
    pub patch_px: u32,
    /// Patch resolution in µm per pixel.
    pub patch_mpp: f64,
    /// SHA-256 of the weights that ran.
    pub weights_sha256: String,
}

impl ModelRef {
    /// The reference of model `name@version` with `config`, whose weights hash `weights_sha256`.
    pub fn new(name: &str, version: i64, weights_sha256: &str, config: &InferenceConfig) -> Self {
        Self {
            name: name.to_string(),
            version,
            architecture: config.architecture(),
            classes: config.classes.clone(),
            positive: config.positive.clone(),
            threshold: config.threshold,
            aggregation: config.aggregation.name(),
            patch_px: config.patch_px,
            patch_mpp: config.patch_mpp,
            weights_sha256: weights_sha256.to_string(),
        }
    }
}

/// A region of high score, in level-0 pixels.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Region {
    /// Left edge.
    pub x: u64,
    /// Top edge.
    pub y: u64,
    /// Width.
    pub width: u64,
    /// Height.
    pub height: u64,
    /// The positive class's probability there.
    pub score: f32,
}

/// Everything a model said about a slide: `result.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InferenceResult {
    /// The clinical slide.
    pub slide_id: String,
    /// The model version.
    pub model: ModelRef,
    /// The positive class's slide score.
    pub score: f64,
    /// The class the model calls.
    pub predicted: String,
    /// Whether the score is at or above the threshold.
    pub flagged: bool,
    /// Slide-level probability of every class.
    pub class_scores: BTreeMap<String, f64>,
    /// Patches scored.
    pub patches: usize,
    /// Share of the slide covered by tissue.
    pub tissue_fraction: f64,
    /// The grid's real resolution in µm per pixel.
    pub grid_mpp: f64,
    /// Per-patch positive-class probabilities.
    pub map: ScoreMap,
    /// The highest-scoring regions, best first.
    pub top_regions: Vec<Region>,
    /// Seconds the run took.
    pub seconds: f64,
    /// When (Unix seconds).
    pub created_at: i64,
    /// The job that produced it, if any.
    pub job_id: Option<String>,
    /// [`NOTICE`].
    pub notice: String,
}

impl InferenceResult {
    /// The result of `prediction` by `model` on `slide_id`.
    pub fn new(
        slide_id: &str,
        model: ModelRef,
        prediction: SlidePrediction,
        job_id: Option<String>,
    ) -> Self {
        let class_scores = model
            .classes
            .iter()
            .cloned()
            .zip(prediction.class_scores.iter().copied())
            .collect();
        Self {
            slide_id: slide_id.to_string(),
            flagged: prediction.score >= model.threshold,
            score: prediction.score,
            predicted: prediction.predicted,
            class_scores,
            patches: prediction.patches,
            tissue_fraction: prediction.tissue_fraction,
            grid_mpp: prediction.grid_mpp,
            top_regions: top_regions(&prediction.map, REGIONS),
            map: prediction.map,
            seconds: prediction.seconds,
            created_at: now(),
            job_id,
            notice: NOTICE.to_string(),
            model,
        }
    }
}

/// Up to `count` of the highest-scoring cells, best first, each at least two cells from
/// those already chosen, so the list points at different places.
pub fn top_regions(map: &ScoreMap, count: usize) -> Vec<Region> {
    let mut cells = map.cells.clone();
    cells.sort_by(|a, b| b.2.total_cmp(&a.2));
    let mut chosen: Vec<(u32, u32, f32)> = Vec::new();
    for cell in cells {
        if chosen.len() == count {
            break;
        }
        let apart = chosen
            .iter()
            .all(|c| c.0.abs_diff(cell.0) > 2 || c.1.abs_diff(cell.1) > 2);
        if apart {
            chosen.push(cell);
        }
    }
    chosen
        .into_iter()
        .map(|(col, row, score)| Region {
            x: u64::from(col) * map.cell.0,
            y: u64::from(row) * map.cell.1,
            width: map.cell.0,
            height: map.cell.1,
            score,
        })
        .collect()
}

/// A result as listed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ResultSummary {
    /// The slide.
    pub slide_id: String,
    /// Model name.
    pub model: String,
    /// Model version.
    pub version: i64,
    /// The positive class's slide score.
    pub score: f64,
    /// The class the model calls.
    pub predicted: String,
    /// The positive class.
    pub positive: String,
    /// Threshold on the score.
    pub threshold: f64,
    /// Whether the score is at or above the threshold.
    pub flagged: bool,
    /// Patches scored.
    pub patches: i64,
    /// The job that produced it.
    pub job_id: Option<String>,
    /// When (Unix seconds).
    pub created_at: i64,
}

/// Where a slide's results live.
pub fn slide_prefix(slide_id: &str) -> String {
    format!("inference/{slide_id}/")
}

fn result_prefix(slide_id: &str, model: &str, version: i64) -> String {
    format!("{}{model}/{version}/", slide_prefix(slide_id))
}

/// Writes the heatmap and `result.json`, then lists the result (replacing an earlier run).
/// A slide deleted meanwhile gets nothing: its objects are removed again and the answer is
/// "not found". Runs of one model version on one slide are serialised by [`crate::job`], so
/// two runs never write the same objects at once.
pub async fn store(platform: &Platform, result: &InferenceResult) -> InferResult<()> {
    let base = result_prefix(&result.slide_id, &result.model.name, result.model.version);
    let heatmap = heatmap_png(&result.map)?;
    put_bytes(&platform.store, &format!("{base}heatmap.png"), heatmap).await?;
    let json = serde_json::to_vec(result)
        .map_err(|e| InferError::Invalid(format!("serialising the result: {e}")))?;
    let sha256 = hex::encode(Sha256::digest(&json));
    put_bytes(&platform.store, &format!("{base}result.json"), json).await?;
    // The slide's existence is read after the insert, in its transaction: on SQLite the
    // insert's write lock keeps the slide's deletion from committing in between (on
    // PostgreSQL the window is the commit itself, as it was for the statement's own guard),
    // and a result for a deleted slide is rolled back instead of listed.
    let mut tx = platform.db.pool().begin().await?;
    sqlx::query(
        "INSERT INTO inference_results (slide_id, model_name, model_version, job_id, score, \
         predicted, positive, threshold, classes, patches, result_sha256, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) \
         ON CONFLICT (slide_id, model_name, model_version) DO UPDATE SET \
         job_id = excluded.job_id, score = excluded.score, predicted = excluded.predicted, \
         positive = excluded.positive, threshold = excluded.threshold, \
         classes = excluded.classes, patches = excluded.patches, \
         result_sha256 = excluded.result_sha256, created_at = excluded.created_at",
    )
    .bind(&result.slide_id)
    .bind(&result.model.name)
    .bind(result.model.version)
    .bind(&result.job_id)
    .bind(result.score)
    .bind(&result.predicted)
    .bind(&result.model.positive)
    .bind(result.model.threshold)
    .bind(serde_json::to_string(&result.model.classes).unwrap_or_default())
    .bind(result.patches as i64)
    .bind(&sha256)
    .bind(result.created_at)
    .execute(&mut *tx)
    .await?;
    if slides::exists_in(&mut tx, &result.slide_id).await? {
        tx.commit().await?;
    } else {
        tx.rollback().await?;
        delete_prefix(&platform.store, &slide_prefix(&result.slide_id)).await?;
        return Err(InferError::NotFound(format!("slide {}", result.slide_id)));
    }
    Ok(())
}

/// A slide's results, newest first.
pub async fn summaries(platform: &Platform, slide_id: &str) -> InferResult<Vec<ResultSummary>> {
    let rows = sqlx::query(
        "SELECT slide_id, model_name, model_version, job_id, score, predicted, positive, \
         threshold, patches, created_at FROM inference_results WHERE slide_id = $1 \
         ORDER BY created_at DESC, model_name, model_version DESC",
    )
    .bind(slide_id)
    .fetch_all(platform.db.pool())
    .await?;
    rows.iter()
        .map(|r| {
            let score: f64 = r.try_get("score")?;
            let threshold: f64 = r.try_get("threshold")?;
            Ok(ResultSummary {
                slide_id: r.try_get("slide_id")?,
                model: r.try_get("model_name")?,
                version: r.try_get("model_version")?,
                score,
                predicted: r.try_get("predicted")?,
                positive: r.try_get("positive")?,
                threshold,
                flagged: score >= threshold,
                patches: r.try_get("patches")?,
                job_id: r.try_get("job_id")?,
                created_at: r.try_get("created_at")?,
            })
        })
        .collect()
}

/// The SHA-256 of a listed result's JSON: which run of the result is current (a rerun has a
/// new one), for caches and ETags. "Not found" when no such result is listed.
pub async fn listed_sha256(
    platform: &Platform,
    slide_id: &str,
    model: &str,
    version: i64,
) -> InferResult<String> {
    let row = sqlx::query(
        "SELECT result_sha256 FROM inference_results \
         WHERE slide_id = $1 AND model_name = $2 AND model_version = $3",
    )
    .bind(slide_id)
    .bind(model)
    .bind(version)
    .fetch_optional(platform.db.pool())
    .await?
    .ok_or_else(|| InferError::NotFound(format!("AI result of {model}@{version}")))?;
    Ok(row.try_get("result_sha256")?)
}

/// One result in full, its JSON checked against the SHA-256 listed with it.
pub async fn load(
    platform: &Platform,
    slide_id: &str,
    model: &str,
    version: i64,
) -> InferResult<InferenceResult> {
    let sha256 = listed_sha256(platform, slide_id, model, version).await?;
    let bytes = get_bytes(
        &platform.store,
        &format!("{}result.json", result_prefix(slide_id, model, version)),
    )
    .await?;
    if hex::encode(Sha256::digest(&bytes)) != sha256 {
        return Err(pathfed_core::CoreError::Integrity(format!(
            "AI result of {model}@{version} on slide {slide_id}"
        ))
        .into());
    }
    serde_json::from_slice(&bytes)
        .map_err(|e| InferError::Invalid(format!("stored AI result: {e}")))
}

/// The heatmap PNG of a listed result.
pub async fn heatmap(
    platform: &Platform,
    slide_id: &str,
    model: &str,
    version: i64,
) -> InferResult<Vec<u8>> {
    listed_sha256(platform, slide_id, model, version).await?;
    Ok(get_bytes(
        &platform.store,
        &format!("{}heatmap.png", result_prefix(slide_id, model, version)),
    )
    .await?)
}

/// Removes a slide's results (rows first, so nothing half-present is listed); slide deletion
/// goes through [`crate::job::forget_slide`], which stops its runs first.
pub(crate) async fn forget_slide(platform: &Platform, slide_id: &str) -> InferResult<()> {
    sqlx::query("DELETE FROM inference_results WHERE slide_id = $1")
        .bind(slide_id)
        .execute(platform.db.pool())
        .await?;
    delete_prefix(&platform.store, &slide_prefix(slide_id)).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_regions_are_the_best_cells_kept_apart() {
        let map = ScoreMap {
            width: 2000,
            height: 2000,
            cell: (100, 100),
            cols: 20,
            rows: 20,
            cells: vec![
                (5, 5, 0.99),
                (6, 5, 0.98),
                (15, 15, 0.9),
                (1, 18, 0.2),
                (5, 8, 0.5),
            ],
        };
        let regions = top_regions(&map, 3);
        let at: Vec<(u64, u64)> = regions.iter().map(|r| (r.x, r.y)).collect();
        assert_eq!(at, [(500, 500), (1500, 1500), (500, 800)]);
        assert_eq!(regions[0].width, 100);
        assert!((regions[0].score - 0.99).abs() < 1e-6);
    }
}
