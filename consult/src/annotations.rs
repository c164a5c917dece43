//! Annotations on a case's slides: polygons, rectangles, points, free-text notes and lines
//! (kept measurements), each optionally carrying a taxonomy label, in level-0 pixel coordinates.
//!
//! Exchanged as GeoJSON the way QuPath writes it (`objectType: "annotation"`, a
//! `classification` with name and colour), plus a `pathfed` property that keeps our kind and
//! label code so a round trip is exact. A hub reader's annotations stay private to their
//! author while the case is blind, so they cannot reveal the first read to the second reader.

use geojson::{Feature, FeatureCollection, GeoJson, Geometry, GeometryValue, JsonObject};
use pathfed_core::Db;
use pathfed_core::accounts::{self, Principal};
use pathfed_core::contracts::slides;
use pathfed_core::db::{new_id, now};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sqlx::Row;

use crate::access::Relation;
use crate::cases::{self, Case, Status, check_text};
use crate::error::{ConsultError, ConsultResult};
use crate::taxonomy::Taxonomy;

/// Most vertices one annotation may have.
pub const MAX_POINTS: usize = 10_000;
/// Most annotations one import may bring.
pub const MAX_IMPORT_FEATURES: usize = 5_000;
/// Longest note.
const MAX_NOTE_CHARS: usize = 2_000;

/// The shape of an annotation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
#[schema(as = AnnotationKind)]
pub enum Kind {
    /// A closed outline (at least three vertices).
    Polygon,
    /// An axis-aligned box (four corners).
    Rectangle,
    /// A single position.
    Point,
    /// A note pinned at a position.
    Text,
    /// A straight segment between two positions: a kept length measurement.
    Line,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Polygon => "polygon",
            Kind::Rectangle => "rectangle",
            Kind::Point => "point",
            Kind::Text => "text",
            Kind::Line => "line",
        }
    }

    /// Every kind.
    const ALL: [Kind; 5] = [
        Kind::Polygon,
        Kind::Rectangle,
        Kind::Point,
        Kind::Text,
        Kind::Line,
    ];

    fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// What a client sends to create an annotation.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AnnotationForm {
    /// Shape.
    pub kind: Kind,
    /// Vertices in level-0 pixels (a rectangle may give two opposite corners).
    pub points: Vec<[f64; 2]>,
    /// Taxonomy code.
    #[serde(default)]
    pub label_code: Option<String>,
    /// Free text.
    #[serde(default)]
    pub note: String,
}

/// A stored annotation.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Annotation {
    /// Id.
    pub id: String,
    /// Case.
    pub case_id: String,
    /// Slide.
    pub slide_id: String,
    /// Author's user id.
    pub author_id: String,
    /// Author's user name.
    pub author: String,
    /// Author's hospital.
    #[serde(skip)]
    pub author_hospital: String,
    /// Shape.
    pub kind: Kind,
    /// Vertices (polygon rings without the closing repeat).
    pub points: Vec<[f64; 2]>,
    /// Taxonomy code.
    pub label_code: Option<String>,
    /// Free text.
    pub note: String,
    /// Created.
    pub created_at: i64,
}

/// The slide's level-0 size, for bounds checks; "not found" unless it belongs to the case.
async fn slide_size(db: &Db, case: &Case, slide_id: &str) -> ConsultResult<(f64, f64)> {
    if !cases::slide_ids(db, &case.id)
        .await?
        .iter()
        .any(|s| s == slide_id)
    {
        return Err(ConsultError::NotFound("slide"));
    }
    let slide = slides::get(db, slide_id)
        .await?
        .ok_or(ConsultError::NotFound("slide"))?;
    Ok((slide.width as f64, slide.height as f64))
}

/// Checks a form against the slide and taxonomy; returns it normalised.
fn check_form(
    form: &AnnotationForm,
    size: (f64, f64),
    taxonomy: &Taxonomy,
) -> ConsultResult<AnnotationForm> {
    let mut points = form.points.clone();
    if points.len() > MAX_POINTS {
        return Err(ConsultError::Invalid(format!(
            "an annotation has at most {MAX_POINTS} vertices"
        )));
    }
    for [x, y] in &points {
        if !(x.is_finite() && y.is_finite()) || *x < 0.0 || *y < 0.0 || *x > size.0 || *y > size.1 {
            return Err(ConsultError::Invalid(format!(
                "vertex ({x}, {y}) lies outside the slide (0..{} × 0..{})",
                size.0, size.1
            )));
        }
    }
    // A closing vertex repeating the first is implied, not stored.
    if matches!(form.kind, Kind::Polygon | Kind::Rectangle)
        && points.len() > 1
        && points.first() == points.last()
    {
        points.pop();
    }
    match form.kind {
        Kind::Polygon if points.len() < 3 => {
            return Err(ConsultError::Invalid(
                "a polygon needs at least three vertices".into(),
            ));
        }
        Kind::Rectangle => {
            let xs = points.iter().map(|p| p[0]);
            let ys = points.iter().map(|p| p[1]);
            let (x0, x1) = (
                xs.clone().fold(f64::MAX, f64::min),
                xs.fold(f64::MIN, f64::max),
            );
            let (y0, y1) = (
                ys.clone().fold(f64::MAX, f64::min),
                ys.fold(f64::MIN, f64::max),
            );
            let corners = vec![[x0, y0], [x1, y0], [x1, y1], [x0, y1]];
            let axis_aligned = points.len() == 2
                || (points.len() == 4 && points.iter().all(|p| corners.contains(p)));
            if !axis_aligned || x0 == x1 || y0 == y1 {
                return Err(ConsultError::Invalid(
                    "a rectangle is two opposite corners or four axis-aligned corners".into(),
                ));
            }
            points = corners;
        }
        Kind::Point | Kind::Text if points.len() != 1 => {
            return Err(ConsultError::Invalid(format!(
                "a {} has exactly one position",
                form.kind.as_str()
            )));
        }
        // A measured length needs its two ends, and they must differ to measure anything.
        Kind::Line if points.len() != 2 || points[0] == points[1] => {
            return Err(ConsultError::Invalid(
                "a line has exactly two different positions".into(),
            ));
        }
        _ => {}
    }
    if let Some(code) = &form.label_code {
        taxonomy.require_label(code)?;
    }
    let note = check_text("note", &form.note, form.kind == Kind::Text)?;
    if note.chars().count() > MAX_NOTE_CHARS {
        return Err(ConsultError::Invalid(format!(
            "a note has at most {MAX_NOTE_CHARS} characters"
        )));
    }
    Ok(AnnotationForm {
        kind: form.kind,
        points,
        label_code: form.label_code.clone(),
        note,
    })
}

/// Whether `user` may add or remove annotations on this case now.
fn require_annotator(user: &Principal, case: &Case, relation: Relation) -> ConsultResult<()> {
    match relation {
        Relation::Spoke if case.status == Status::Draft => Ok(()),
        Relation::HubPathologist
            if matches!(
                case.status,
                Status::Assigned
                    | Status::Diagnosed
                    | Status::InDoubleCheck
                    | Status::Adjudication
                    | Status::ReadyForSignOut
            ) && case.is_reader(&user.id) =>
        {
            Ok(())
        }
        _ if case.status.is_closed() => Err(ConsultError::Transition(format!(
            "the case is {}; its annotations can no longer change",
            case.status.as_str()
        ))),
        _ => Err(ConsultError::Forbidden(
            "only the spoke (while drafting) and the case's readers annotate".into(),
        )),
    }
}

async fn insert(
    conn: &mut sqlx::AnyConnection,
    user: &Principal,
    case: &Case,
    slide_id: &str,
    form: &AnnotationForm,
) -> ConsultResult<String> {
    let id = new_id();
    let geometry = serde_json::to_string(&form.points)
        .map_err(|e| ConsultError::Invalid(format!("points: {e}")))?;
    sqlx::query(
        "INSERT INTO annotations (id, case_id, slide_id, author_id, kind, geometry, label_code, \
         note, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(&id)
    .bind(&case.id)
    .bind(slide_id)
    .bind(&user.id)
    .bind(form.kind.as_str())
    .bind(geometry)
    .bind(&form.label_code)
    .bind(&form.note)
    .bind(now())
    .execute(conn)
    .await?;
    Ok(id)
}

/// Adds one annotation.
pub async fn create(
    db: &Db,
    taxonomy: &Taxonomy,
    user: &Principal,
    case: &Case,
    relation: Relation,
    slide_id: &str,
    form: &AnnotationForm,
) -> ConsultResult<Annotation> {
    require_annotator(user, case, relation)?;
    let size = slide_size(db, case, slide_id).await?;
    let form = check_form(form, size, taxonomy)?;
    let mut conn = db.pool().acquire().await?;
    let id = insert(&mut conn, user, case, slide_id, &form).await?;
    list_all(db, &case.id, slide_id)
        .await?
        .into_iter()
        .find(|a| a.id == id)
        .ok_or(ConsultError::NotFound("annotation"))
}

/// Removes one of the user's own annotations.
pub async fn delete(
    db: &Db,
    user: &Principal,
    case: &Case,
    relation: Relation,
    annotation_id: &str,
) -> ConsultResult<()> {
    require_annotator(user, case, relation)?;
    let done =
        sqlx::query("DELETE FROM annotations WHERE id = $1 AND case_id = $2 AND author_id = $3")
            .bind(annotation_id)
            .bind(&case.id)
            .bind(&user.id)
            .execute(db.pool())
            .await?;
    if done.rows_affected() == 0 {
        return Err(ConsultError::NotFound("annotation"));
    }
    Ok(())
}

async fn list_all(db: &Db, case_id: &str, slide_id: &str) -> ConsultResult<Vec<Annotation>> {
    let rows = sqlx::query(
        "SELECT id, case_id, slide_id, author_id, kind, geometry, label_code, note, created_at \
         FROM annotations WHERE case_id = $1 AND slide_id = $2 ORDER BY created_at, id",
    )
    .bind(case_id)
    .bind(slide_id)
    .fetch_all(db.pool())
    .await?;
    let author_ids: Vec<String> = rows
        .iter()
        .map(|row| row.try_get("author_id"))
        .collect::<Result<_, _>>()?;
    let authors = accounts::users_by_id(db, &author_ids).await?;
    let mut annotations = Vec::with_capacity(rows.len());
    for row in &rows {
        let author_id: String = row.try_get("author_id")?;
        // Left out without a known author, as a join with `users` would leave it out.
        let Some(author) = authors.get(&author_id) else {
            continue;
        };
        let kind: String = row.try_get("kind")?;
        let geometry: String = row.try_get("geometry")?;
        annotations.push(Annotation {
            id: row.try_get("id")?,
            case_id: row.try_get("case_id")?,
            slide_id: row.try_get("slide_id")?,
            author_id,
            author: author.username.clone(),
            author_hospital: author.hospital.id.clone(),
            kind: Kind::parse(&kind).unwrap_or(Kind::Point),
            points: serde_json::from_str(&geometry).unwrap_or_default(),
            label_code: row.try_get("label_code")?,
            note: row.try_get("note")?,
            created_at: row.try_get("created_at")?,
        });
    }
    Ok(annotations)
}

/// The annotations of one slide of the case that `user` may see.
pub async fn visible(
    db: &Db,
    user: &Principal,
    case: &Case,
    relation: Relation,
    slide_id: &str,
) -> ConsultResult<Vec<Annotation>> {
    slide_size(db, case, slide_id).await?;
    let all = list_all(db, &case.id, slide_id).await?;
    Ok(all
        .into_iter()
        .filter(|a| {
            if a.author_id == user.id {
                return true;
            }
            let by_hub = case.hub_id.as_deref() == Some(a.author_hospital.as_str());
            if !by_hub {
                return true;
            }
            match relation {
                Relation::Spoke => case.status == Status::SignedOut,
                Relation::HubPathologist | Relation::HubAdmin => !case.status.is_blind(),
            }
        })
        .collect())
}

/// A stable display colour per label code, so classes look the same in every viewer.
fn colour(code: &str) -> [u8; 3] {
    const PALETTE: [[u8; 3]; 8] = [
        [230, 25, 75],
        [60, 180, 75],
        [0, 130, 200],
        [245, 130, 48],
        [145, 30, 180],
        [70, 240, 240],
        [240, 50, 230],
        [128, 128, 0],
    ];
    let sum: usize = code.bytes().map(usize::from).sum();
    PALETTE[sum % PALETTE.len()]
}

/// Annotations as a QuPath-readable GeoJSON feature collection.
pub fn to_geojson(annotations: &[Annotation], taxonomy: &Taxonomy) -> serde_json::Value {
    let features = annotations
        .iter()
        .map(|a| {
            let geometry = match a.kind {
                Kind::Point | Kind::Text => Geometry::new_point(a.points[0]),
                Kind::Line => Geometry::new_line_string(a.points.clone()),
                Kind::Polygon | Kind::Rectangle => {
                    let mut ring: Vec<[f64; 2]> = a.points.clone();
                    ring.push(a.points[0]);
                    Geometry::new_polygon([ring])
                }
            };
            let mut properties = JsonObject::new();
            properties.insert("objectType".into(), json!("annotation"));
            if !a.note.is_empty() {
                properties.insert("name".into(), json!(a.note));
            }
            if let Some(code) = &a.label_code {
                let name = taxonomy
                    .label(code)
                    .map(|l| l.name.clone())
                    .unwrap_or_else(|| code.clone());
                properties.insert(
                    "classification".into(),
                    json!({ "name": name, "color": colour(code) }),
                );
            }
            properties.insert(
                "pathfed".into(),
                json!({
                    "id": a.id, "kind": a.kind, "label_code": a.label_code, "author": a.author,
                }),
            );
            let mut feature = Feature::from(geometry);
            feature.id = Some(geojson::feature::Id::String(a.id.clone()));
            feature.properties = Some(properties);
            feature
        })
        .collect();
    serde_json::to_value(GeoJson::FeatureCollection(FeatureCollection {
        bbox: None,
        features,
        foreign_members: None,
    }))
    .unwrap_or_default()
}

fn feature_form(
    index: usize,
    feature: &Feature,
    taxonomy: &Taxonomy,
) -> ConsultResult<AnnotationForm> {
    let at = |why: String| ConsultError::Invalid(format!("feature {index}: {why}"));
    let properties = feature.properties.clone().unwrap_or_default();
    let ours = properties.get("pathfed");
    let label_code = match ours
        .and_then(|p| p.get("label_code"))
        .and_then(|c| c.as_str())
    {
        Some(code) => Some(code.to_string()),
        None => match properties
            .get("classification")
            .and_then(|c| c.get("name"))
            .and_then(|n| n.as_str())
        {
            None => None,
            Some(name) => Some(
                taxonomy
                    .labels
                    .iter()
                    .find(|l| l.name == name || l.code == name)
                    .map(|l| l.code.clone())
                    .ok_or_else(|| {
                        at(format!(
                            "classification {name:?} is not a label of the {} taxonomy",
                            taxonomy.id
                        ))
                    })?,
            ),
        },
    };
    let note = properties
        .get("name")
        .and_then(|n| n.as_str())
        .unwrap_or_default()
        .to_string();
    let declared = ours
        .and_then(|p| p.get("kind"))
        .and_then(|k| k.as_str())
        .and_then(Kind::parse);
    let geometry = feature
        .geometry
        .as_ref()
        .ok_or_else(|| at("has no geometry".into()))?;
    let (kind, points) = match &geometry.value {
        GeometryValue::Point { coordinates } => {
            let kind = match declared {
                Some(Kind::Text) => Kind::Text,
                _ => Kind::Point,
            };
            (kind, vec![position(coordinates).map_err(&at)?])
        }
        GeometryValue::Polygon { coordinates } => {
            if coordinates.len() != 1 {
                return Err(at("polygons with holes are not supported".into()));
            }
            let ring = coordinates[0]
                .iter()
                .map(position)
                .collect::<Result<Vec<_>, _>>()
                .map_err(&at)?;
            if ring.len() < 4 || ring.first() != ring.last() {
                return Err(at(
                    "a polygon ring must be closed (first = last vertex)".into()
                ));
            }
            let kind = match declared {
                Some(Kind::Rectangle) => Kind::Rectangle,
                _ => Kind::Polygon,
            };
            (kind, ring)
        }
        // QuPath writes its line annotations as LineStrings; the check of the form wants two
        // positions, the only line that measures one length.
        GeometryValue::LineString { coordinates } => {
            let line = coordinates
                .iter()
                .map(position)
                .collect::<Result<Vec<_>, _>>()
                .map_err(&at)?;
            (Kind::Line, line)
        }
        other => {
            return Err(at(format!(
                "{} geometries are not supported (use Polygon, LineString or Point)",
                other.type_name()
            )));
        }
    };
    Ok(AnnotationForm {
        kind,
        points,
        label_code,
        note,
    })
}

fn position(p: &geojson::Position) -> Result<[f64; 2], String> {
    match p.as_slice() {
        [x, y] | [x, y, _] => Ok([*x, *y]),
        _ => Err("a position has two coordinates".into()),
    }
}

/// Imports a GeoJSON feature collection (or single feature) onto a slide: all or nothing.
pub async fn import(
    db: &Db,
    taxonomy: &Taxonomy,
    user: &Principal,
    case: &Case,
    relation: Relation,
    slide_id: &str,
    body: &[u8],
) -> ConsultResult<Vec<Annotation>> {
    require_annotator(user, case, relation)?;
    let size = slide_size(db, case, slide_id).await?;
    let text = std::str::from_utf8(body)
        .map_err(|_| ConsultError::Invalid("GeoJSON must be UTF-8 text".into()))?;
    let parsed: GeoJson = text
        .parse()
        .map_err(|e| ConsultError::Invalid(format!("not valid GeoJSON: {e}")))?;
    let features = match parsed {
        GeoJson::FeatureCollection(collection) => collection.features,
        GeoJson::Feature(feature) => vec![feature],
        GeoJson::Geometry(_) => {
            return Err(ConsultError::Invalid(
                "send a Feature or FeatureCollection, not a bare geometry".into(),
            ));
        }
    };
    if features.len() > MAX_IMPORT_FEATURES {
        return Err(ConsultError::Invalid(format!(
            "at most {MAX_IMPORT_FEATURES} features per import"
        )));
    }
    let mut forms = Vec::with_capacity(features.len());
    for (index, feature) in features.iter().enumerate() {
        let form = feature_form(index, feature, taxonomy)?;
        let form = check_form(&form, size, taxonomy)
            .map_err(|e| ConsultError::Invalid(format!("feature {index}: {e}")))?;
        forms.push(form);
    }
    let mut ids = Vec::with_capacity(forms.len());
    let mut tx = db.pool().begin().await?;
    for form in &forms {
        ids.push(insert(&mut tx, user, case, slide_id, form).await?);
    }
    tx.commit().await?;
    Ok(list_all(db, &case.id, slide_id)
        .await?
        .into_iter()
        .filter(|a| ids.contains(&a.id))
        .collect())
}
