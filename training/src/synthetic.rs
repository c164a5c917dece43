//! A labelled dataset version made from nothing: generated slides of two procedurally
//! distinct tissue textures (dense nuclei vs. stroma), each slide one patient, cut into patch
//! shards by the research tier's own extraction and split by its own patient-level splitter.
//! Tests, benchmarks and demonstrations train on it; nothing is downloaded.

use std::path::Path;
use std::sync::Arc;

use burn::prelude::*;
use burn::train::Interrupter;
use pathfed_core::config::S3Config;
use pathfed_core::store::{Store, open_store, put_bytes};
use pathfed_datasets::manifest::{
    Candidate, Content, Entry, Manifest, Quasi, SmallCells, VersionParams, count, split_by_patient,
};
use pathfed_datasets::patches::{ExtractParams, SlideLabels, extract_slide, shard_keys};
use pathfed_models::model::Architecture;
use pathfed_models::registry::{InferenceConfig, ModelFiles, model_bytes};
use pathfed_synth::{SynthSpec, TissueClass, generate};
use serde_json::json;

use crate::data::PatchSet;
use crate::error::{TrainError, TrainResult};
use crate::run::{TrainParams, train};

/// The two labels: dense nuclei (tumour-like) and stroma.
pub const LABELS: [&str; 2] = ["TEX-DENSE", "TEX-STROMA"];

/// What to generate.
#[derive(Debug, Clone)]
pub struct TextureSpec {
    /// Slides (half of each texture, one patient each).
    pub slides: usize,
    /// Level-0 size of each slide.
    pub size: (u64, u64),
    /// Patch side and resolution.
    pub patch_px: u32,
    /// Patch resolution in µm per pixel (slides are 0.5 µm/px).
    pub patch_mpp: f64,
    /// Train/val/test fractions.
    pub fractions: [f64; 3],
    /// Seed of the slides and the split.
    pub seed: u64,
}

impl Default for TextureSpec {
    fn default() -> Self {
        Self {
            slides: 24,
            size: (1536, 1024),
            patch_px: 64,
            patch_mpp: 1.0,
            fractions: [0.5, 0.17, 0.33],
            seed: 1,
        }
    }
}

/// Generates the slides in `work`, writes their shards to `store` and returns the version's
/// manifest (also stored, as `name@1`).
pub async fn texture_dataset(
    store: &Store,
    work: &Path,
    name: &str,
    spec: &TextureSpec,
) -> TrainResult<Manifest> {
    let mut params = ExtractParams::default();
    params.grid.patch_px = spec.patch_px;
    params.grid.patch_mpp = spec.patch_mpp;
    let hash = params.hash();
    let mut candidates = Vec::new();
    let mut qc = serde_json::Map::new();
    let mut patches_of = std::collections::BTreeMap::new();
    for i in 0..spec.slides {
        let (class, label) = if i % 2 == 0 {
            (TissueClass::NucleusDense, LABELS[0])
        } else {
            (TissueClass::Stroma, LABELS[1])
        };
        let id = format!("rs-synthetic-{i:03}");
        let file = work.join(format!("{id}.svs"));
        let slide = SynthSpec {
            width: spec.size.0,
            height: spec.size.1,
            mpp: 0.5,
            classes: vec![class],
            tissue_fraction: 0.6,
            seed: spec.seed.wrapping_mul(1000) + i as u64,
            ..SynthSpec::default()
        };
        generate(&slide, &file, &|_, _| {})
            .map_err(|e| TrainError::Invalid(format!("generating {id}: {e}")))?;
        let reader = pathfed_slide::open(&file, &Default::default())
            .map_err(|e| TrainError::Invalid(format!("opening {id}: {e}")))?;
        let mut bin = Vec::new();
        let index = extract_slide(
            reader.as_ref(),
            &id,
            &SlideLabels {
                slide: label,
                regions: &[],
            },
            &params,
            &mut bin,
            &|_, _| true,
        )?;
        let (index_key, bin_key) = shard_keys(&hash, &id);
        put_bytes(store, &bin_key, bin).await?;
        put_bytes(
            store,
            &index_key,
            serde_json::to_vec(&index).unwrap_or_default(),
        )
        .await?;
        qc.insert(id.clone(), index.manifest_entry());
        patches_of.insert(id.clone(), (label, index.qc.patches));
        candidates.push(Candidate {
            id: id.clone(),
            patient: format!("rp-synthetic-{i:03}"),
            label: label.to_string(),
            quasi: Quasi {
                age_band: "any".into(),
                sex: "any".into(),
                hospital: "any".into(),
                year: "any".into(),
            },
            object_key: String::new(),
            sha256: String::new(),
            dimensions: spec.size,
            mpp: Some((0.5, 0.5)),
            regions: json!([]),
            ai_discordant: None,
        });
    }
    let slides: Vec<Entry> = split_by_patient(candidates, spec.fractions, spec.seed);
    // Per split and label, as the extract job counts them (training checks them first).
    let mut patch_counts: std::collections::BTreeMap<
        String,
        std::collections::BTreeMap<&str, u64>,
    > = std::collections::BTreeMap::new();
    for entry in &slides {
        if let Some((label, n)) = patches_of.get(&entry.slide.id) {
            *patch_counts
                .entry(entry.split.clone())
                .or_default()
                .entry(label)
                .or_default() += *n;
        }
    }
    let total: u64 = patch_counts
        .values()
        .flat_map(|labels| labels.values())
        .sum();
    let content = Content {
        params: VersionParams {
            organ: None,
            labels: "synthetic-texture".into(),
            seed: spec.seed,
            fractions: spec.fractions,
            min_cell_size: Some(1),
            extraction: Some(params.clone()),
        },
        curation: json!({ "synthetic": true }),
        extraction: Some(json!({
            "params_hash": hash,
            "params": params,
            "patches": total,
            "patch_counts": patch_counts,
            "slides": qc,
        })),
        counts: count(&slides),
        slides,
        small_cells: SmallCells {
            min_cell_size: 1,
            smallest_published: 1,
            generalised: 0,
            suppressed: 0,
        },
        opted_out_excluded: 0,
    };
    let manifest = Manifest {
        dataset: name.to_string(),
        version: 1,
        created_at: 0,
        content_hash: content.hash(),
        content,
        withdrawn: Vec::new(),
    };
    put_bytes(
        store,
        &format!("research/datasets/{name}/1/manifest.json"),
        serde_json::to_vec(&manifest).unwrap_or_default(),
    )
    .await?;
    Ok(manifest)
}

/// How the learning tests train the small model on [`TextureSpec::default`]'s dataset; dense
/// nuclei ([`LABELS`]`[0]`, tumour-like) are the positive class.
pub fn texture_params() -> TrainParams {
    TrainParams {
        architecture: Architecture::ResnetSmall,
        epochs: 4,
        batch: 16,
        lr: 3e-3,
        seed: 5,
        input_px: 64,
        patience: 0,
        positive: Some(LABELS[0].to_string()),
        ..TrainParams::default()
    }
}

/// The small model trained as the learning tests train it, as registry files (`config.json`,
/// `model.bpk`) in `dir`: what inference tests and demonstrations run on slides. A model
/// trained earlier into `dir` with the same recipe is reused, so several test programs share
/// one training run; otherwise the dataset is generated and the model trained (about a minute
/// on two cores) and written to `dir` at once, complete or not at all.
pub async fn texture_model(dir: &Path) -> TrainResult<ModelFiles> {
    let spec = TextureSpec::default();
    let params = texture_params();
    let recipe = format!(
        "{}\n{spec:?}\n{}",
        env!("CARGO_PKG_VERSION"),
        serde_json::to_string(&params).unwrap_or_default()
    );
    let recipe_file = dir.join("recipe.txt");
    if std::fs::read_to_string(&recipe_file).ok().as_deref() == Some(recipe.as_str())
        && let Ok(files) = ModelFiles::read_dir(dir)
    {
        return Ok(files);
    }
    let parent = dir.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent)
        .map_err(|e| TrainError::io(format!("creating {}", parent.display()), e))?;
    let work = tempfile::Builder::new()
        .prefix(".texture-model-")
        .tempdir_in(parent)
        .map_err(|e| TrainError::io("creating a work folder", e))?;
    let store = open_store(
        &format!("file://{}", work.path().join("objects").display()),
        &S3Config::default(),
    )?;
    let slides = work.path().join("slides");
    std::fs::create_dir_all(&slides)
        .map_err(|e| TrainError::io(format!("creating {}", slides.display()), e))?;
    let manifest = texture_dataset(&store, &slides, "textures", &spec).await?;
    let set = PatchSet::fetch(&store, &manifest, &work.path().join("cache"), |_, _| {}).await?;
    let (set, run_dir) = (Arc::new(set), work.path().join("run"));
    let run_params = params.clone();
    let trained = tokio::task::spawn_blocking(move || {
        train(
            set,
            &run_params,
            &Device::flex(),
            &run_dir,
            None,
            Arc::new(|_| {}),
            Interrupter::new(),
        )
    })
    .await
    .map_err(|e| TrainError::Invalid(format!("training stopped: {e}")))??;
    let config = InferenceConfig {
        model: Some(trained.config.clone()),
        encoder: None,
        classes: trained.classes.clone(),
        positive: trained.positive.clone(),
        aggregation: params.aggregation,
        attention: None,
        threshold: params.threshold,
        patch_px: spec.patch_px,
        patch_mpp: spec.patch_mpp,
        mpp_tolerance: pathfed_slide::tissue::GridParams::default().mpp_tolerance,
    };
    let files = ModelFiles {
        config: serde_json::to_vec_pretty(&config)
            .map_err(|e| TrainError::Invalid(format!("model config: {e}")))?,
        weights: model_bytes(&trained.model)?,
        aggregator: None,
    };
    let staged = work.path().join("model");
    std::fs::create_dir_all(&staged)
        .map_err(|e| TrainError::io(format!("creating {}", staged.display()), e))?;
    for (name, bytes) in [
        ("config.json", &files.config),
        ("model.bpk", &files.weights),
        ("recipe.txt", &recipe.clone().into_bytes()),
    ] {
        std::fs::write(staged.join(name), bytes)
            .map_err(|e| TrainError::io(format!("writing {name}"), e))?;
    }
    let _ = std::fs::remove_dir_all(dir);
    std::fs::rename(&staged, dir)
        .map_err(|e| TrainError::io(format!("moving the model to {}", dir.display()), e))?;
    Ok(files)
}
