//! Reads of the `inference_results` table, which inference (`pathfed_inference::results`)
//! owns and writes. Sign-out compares each listed result with the final diagnosis inside its
//! own transaction, so the read takes that transaction's connection.

use sqlx::{AnyConnection, Row};

use crate::db::{IN_CHUNK, placeholders};
use crate::error::CoreResult;

/// A model's call on a slide, as listed with its stored result.
#[derive(Debug, Clone, PartialEq)]
pub struct AiCall {
    /// The clinical slide.
    pub slide_id: String,
    /// Model name.
    pub model: String,
    /// Model version.
    pub version: i64,
    /// The class the model called.
    pub predicted: String,
    /// The class whose probability scores the slide.
    pub positive: String,
    /// The slide score.
    pub score: f64,
    /// The threshold on the score.
    pub threshold: f64,
    /// The classes the model can name (empty if the stored list does not parse).
    pub classes: Vec<String>,
}

/// The listed results on any of `slide_ids`, read on `conn`, by slide then model version.
pub async fn calls_for_slides(
    conn: &mut AnyConnection,
    slide_ids: &[String],
) -> CoreResult<Vec<AiCall>> {
    let mut calls = Vec::new();
    for chunk in slide_ids.chunks(IN_CHUNK) {
        // Only parameter numbers are formatted in; the ids are bound.
        let sql = format!(
            "SELECT slide_id, model_name, model_version, predicted, positive, score, \
             threshold, classes FROM inference_results WHERE slide_id IN ({}) \
             ORDER BY slide_id, model_name, model_version",
            placeholders(1, chunk.len())
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for id in chunk {
            query = query.bind(id.clone());
        }
        for row in query.fetch_all(&mut *conn).await? {
            calls.push(AiCall {
                slide_id: row.try_get("slide_id")?,
                model: row.try_get("model_name")?,
                version: row.try_get("model_version")?,
                predicted: row.try_get("predicted")?,
                positive: row.try_get("positive")?,
                score: row.try_get("score")?,
                threshold: row.try_get("threshold")?,
                classes: serde_json::from_str(&row.try_get::<String, _>("classes")?)
                    .unwrap_or_default(),
            });
        }
    }
    Ok(calls)
}
