//! Concordance of the blind double-check, per hub and per taxonomy: how often the second read
//! agreed with the first, a quality measure hubs report on.

use pathfed_core::Db;
use pathfed_core::accounts;
use serde::Serialize;
use sqlx::Row;

use crate::error::ConsultResult;

/// Agreement counts for one hub and taxonomy.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Concordance {
    /// Hub id.
    pub hub_id: String,
    /// Hub name.
    pub hub: String,
    /// Taxonomy id.
    pub taxonomy: String,
    /// Cases double-checked.
    pub double_checked: i64,
    /// Of which the reads agreed.
    pub concordant: i64,
    /// `concordant / double_checked`.
    pub rate: f64,
}

/// Concordance of every hub (or only `hub_id`), per taxonomy.
pub async fn concordance(db: &Db, hub_id: Option<&str>) -> ConsultResult<Vec<Concordance>> {
    let rows = sqlx::query(
        "SELECT hub_id, taxonomy, count(*) AS n, \
         sum(CASE WHEN concordant = 1 THEN 1 ELSE 0 END) AS agreed \
         FROM cases WHERE concordant IS NOT NULL AND hub_id IS NOT NULL \
         AND ($1 = '' OR hub_id = $1) GROUP BY hub_id, taxonomy",
    )
    .bind(hub_id.unwrap_or(""))
    .fetch_all(db.pool())
    .await?;
    let hubs: Vec<String> = rows
        .iter()
        .map(|row| row.try_get("hub_id"))
        .collect::<Result<_, _>>()?;
    let names = accounts::hospital_names(db, &hubs).await?;
    let mut listed = Vec::with_capacity(rows.len());
    for row in &rows {
        let hub_id: String = row.try_get("hub_id")?;
        // Left out without a known hub, as a join with `hospitals` would leave it out.
        let Some(hub) = names.get(&hub_id) else {
            continue;
        };
        let n: i64 = row.try_get("n")?;
        let agreed: i64 = row.try_get("agreed")?;
        listed.push(Concordance {
            hub_id,
            hub: hub.clone(),
            taxonomy: row.try_get("taxonomy")?,
            double_checked: n,
            concordant: agreed,
            rate: if n > 0 { agreed as f64 / n as f64 } else { 0.0 },
        });
    }
    // By hub name then taxonomy, as the report lists them.
    listed.sort_by(|a, b| (&a.hub, &a.taxonomy).cmp(&(&b.hub, &b.taxonomy)));
    Ok(listed)
}
