//! Reads of the `ai_feedback` table, which consultation (`pathfed_consult::ai`) owns and
//! writes at sign-out and amendment: per slide and model version, whether the model's call
//! was the final diagnosis. Inference turns it into a model's concordance; curation copies a
//! slide's disagreements onto its research copy.

use sqlx::Row;

use crate::db::Db;
use crate::error::CoreResult;

/// One signed-out slide's comparison of a model's call with the final diagnosis.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Feedback {
    /// The model called the positive class.
    pub ai_positive: bool,
    /// The final diagnosis code.
    pub final_code: String,
    /// The final diagnosis is the positive class.
    pub final_positive: bool,
    /// Whether the call was the final diagnosis; `None` where that is no class of the model.
    pub agree: Option<bool>,
}

/// A model's call that the final diagnosis contradicted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Discordance {
    /// Model name.
    pub model: String,
    /// Model version.
    pub version: i64,
    /// The class the model called.
    pub predicted: String,
}

/// Every recorded comparison of `model@version`'s calls (aggregates are the caller's).
pub async fn for_model(db: &Db, model: &str, version: i64) -> CoreResult<Vec<Feedback>> {
    let rows = sqlx::query(
        "SELECT ai_positive, final_code, final_positive, agree FROM ai_feedback \
         WHERE model_name = $1 AND model_version = $2",
    )
    .bind(model)
    .bind(version)
    .fetch_all(db.pool())
    .await?;
    rows.iter()
        .map(|row| {
            Ok(Feedback {
                ai_positive: row.try_get::<i64, _>("ai_positive")? != 0,
                final_code: row.try_get("final_code")?,
                final_positive: row.try_get::<i64, _>("final_positive")? != 0,
                agree: row.try_get::<Option<i64>, _>("agree")?.map(|a| a == 1),
            })
        })
        .collect()
}

/// The calls on `slide_id` that the final diagnosis of `case_id` contradicted, by model and
/// version.
pub async fn discordant(db: &Db, case_id: &str, slide_id: &str) -> CoreResult<Vec<Discordance>> {
    let rows = sqlx::query(
        "SELECT model_name, model_version, predicted FROM ai_feedback \
         WHERE case_id = $1 AND slide_id = $2 AND agree = 0 ORDER BY model_name, model_version",
    )
    .bind(case_id)
    .bind(slide_id)
    .fetch_all(db.pool())
    .await?;
    rows.iter()
        .map(|row| {
            Ok(Discordance {
                model: row.try_get("model_name")?,
                version: row.try_get("model_version")?,
                predicted: row.try_get("predicted")?,
            })
        })
        .collect()
}
