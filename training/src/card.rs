//! The model card: what a model is for, what it learned from, how well it did on slides it
//! never saw (with intervals), and where it must not be trusted. Limitations are derived from
//! the data (test-set size, hospitals, label granularity) so the card cannot overstate them.

use std::collections::BTreeSet;

use serde_json::{Value, json};

use pathfed_models::registry::EncoderRef;

use crate::data::PatchSet;
use crate::run::SeedResult;
use crate::runs::CheckedRequest;

/// The notice every card, panel and export of a model carries.
pub const DECISION_SUPPORT_NOTICE: &str = "Decision support only: this model does not make a \
     diagnosis. A pathologist reviews every slide and signs every report.";

/// Below this many test slides the card warns that its metrics are unreliable.
const FEW_TEST_SLIDES: usize = 30;

/// Builds the card of a run's model.
pub fn model_card(
    checked: &CheckedRequest,
    set: &PatchSet,
    summary: &Value,
    positive: &str,
    results: &[SeedResult],
    encoder: Option<&EncoderRef>,
    code_version: &str,
) -> Value {
    let manifest = &checked.manifest;
    let params = &manifest.content.params;
    let organ = params.organ.clone().unwrap_or_else(|| "any organ".into());
    let hospitals: BTreeSet<&str> = manifest
        .content
        .slides
        .iter()
        .map(|e| e.slide.quasi.hospital.as_str())
        .collect();
    let patients: BTreeSet<&str> = manifest
        .content
        .slides
        .iter()
        .map(|e| e.slide.patient.as_str())
        .collect();
    let per_split = |split: &str| {
        json!({
            "slides": set.slides.iter().filter(|s| s.split == split).count(),
            "patches": set.split(split).len(),
        })
    };
    let test_slides = summary["test_slides"].as_u64().unwrap_or(0) as usize;
    let labels = match encoder {
        None => format!(
            "Labels are slide-level sign-out diagnoses: every patch inherits its slide's label, so \
             patches without the lesion are labelled {positive} during training."
        ),
        Some(e) => format!(
            "Labels are slide-level sign-out diagnoses and the head learns from them alone: its \
             heatmap scores each patch as if it were the whole slide, which shows where the \
             model sees {positive} but is no outline of a lesion. The encoder {} is frozen, \
             trained by its publishers on their own data under their licence.",
            e.name
        ),
    };
    let mut limitations = vec![
        labels,
        "Evaluated on a patient-level split of the same hospitals' slides: an internal \
         validation, not an external or prospective one."
            .to_string(),
        "Scanners, stains and preparations absent from the training data can change the scores \
         without warning."
            .to_string(),
        format!(
            "Only the classes {} are known to it; any other diagnosis is scored as one of them.",
            set.classes.join(", ")
        ),
    ];
    if test_slides < FEW_TEST_SLIDES {
        limitations.push(format!(
            "Only {test_slides} test slides: the intervals are wide and the metrics are not \
             reliable estimates of clinical performance."
        ));
    }
    if hospitals.len() < 2 {
        limitations.push("All slides come from one hospital.".into());
    }
    json!({
        "notice": DECISION_SUPPORT_NOTICE,
        "intended_use": format!(
            "Decision support for hub pathologists reading {organ} slides labelled in the {} \
             taxonomy: the slide-level probability of {positive} (among {}) and a heatmap of \
             where the model sees it, shown beside the slide to help prioritise and review. \
             Not for use without a pathologist, not for screening without review.",
            params.labels,
            set.classes.join(", ")
        ),
        "model": {
            "architecture": checked.architecture_name(),
            "input_px": checked.input_px,
            "classes": set.classes,
            "positive": positive,
            "aggregation": if encoder.is_some() { "attention".to_string() } else { checked.aggregation.name() },
            "encoder": encoder.map(|e| json!({
                "name": e.name,
                "weights_sha256": e.weights_sha256,
                "features": e.spec.vit.features(),
                "input_px": e.spec.preprocess.input_px,
                "mpp": e.spec.preprocess.mpp,
            })),
            "head": checked.encoder.as_ref().map(|plan| plan.pooling.name()),
        },
        "training_data": {
            "dataset": checked.dataset,
            "version": checked.version,
            "content_hash": manifest.content_hash,
            "taxonomy": params.labels,
            "organ": params.organ,
            "patients": patients.len(),
            "research_hospitals": hospitals.len(),
            "train": per_split("train"),
            "validation": per_split("val"),
            "test": per_split("test"),
            "patch_px": set.patch_px,
            "patch_mpp": manifest.content.extraction.as_ref().map(|x| x["params"]["patch_mpp"].clone()),
            "small_cells": manifest.content.small_cells,
        },
        "training": {
            "request": checked.request,
            "code_version": code_version,
            "pretrained": checked.pretrained.as_ref().map(|(path, sha256)| json!({
                "file": path.file_name().map(|n| n.to_string_lossy().to_string()),
                "sha256": sha256,
            })),
            "epochs_run": results.iter().map(|r| r.history.iter().map(|m| m.epoch).max().unwrap_or(0)).collect::<Vec<_>>(),
        },
        "evaluation": summary,
        "limitations": limitations,
    })
}
