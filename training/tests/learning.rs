//! Training from pixels on generated data: the small ResNet learns two tissue textures to
//! slide-level balanced accuracy ≥ 0.95 on the test split; with shuffled training labels it
//! does not; a run stopped and resumed ends where an uninterrupted one does; bad requests are
//! refused before any work.

#![allow(clippy::unwrap_used)] // Test code: a failed step should panic with its cause.

use std::sync::Arc;

use burn::prelude::*;
use burn::train::Interrupter;
use pathfed_core::config::S3Config;
use pathfed_core::store::open_store;
use pathfed_models::aggregate::Aggregator;
use pathfed_models::mil::MilConfig;
use pathfed_training::data::PatchSet;
use pathfed_training::mil;
use pathfed_training::run::{Progress, TrainParams, TrainedRun, check, train};
use pathfed_training::synthetic::{TextureSpec, texture_dataset, texture_params};

/// The generated version's patches, fetched through the shard cache as a real run does.
async fn dataset(dir: &std::path::Path) -> PatchSet {
    let store = open_store(
        &format!("file://{}", dir.join("objects").display()),
        &S3Config::default(),
    )
    .unwrap();
    let work = dir.join("slides");
    std::fs::create_dir_all(&work).unwrap();
    let manifest = texture_dataset(&store, &work, "textures", &TextureSpec::default())
        .await
        .unwrap();
    PatchSet::fetch(&store, &manifest, &dir.join("cache"), |_, _| {})
        .await
        .unwrap()
}

/// The recipe the inference tests' model is trained with, too.
fn params() -> TrainParams {
    texture_params()
}

fn run(
    set: &PatchSet,
    params: &TrainParams,
    dir: &std::path::Path,
    resume: Option<usize>,
) -> TrainedRun {
    train(
        Arc::new(set.clone()),
        params,
        &Device::flex(),
        dir,
        resume,
        Arc::new(|_| {}),
        Interrupter::new(),
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn learns_textures_from_pixels_and_not_from_shuffled_labels() {
    let dir = tempfile::tempdir().unwrap();
    let set = dataset(dir.path()).await;
    assert_eq!(set.classes, ["TEX-DENSE", "TEX-STROMA"]);
    let test_slides = set.slides.iter().filter(|s| s.split == "test").count();
    assert!(test_slides >= 6, "{test_slides} test slides");

    let events = Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = events.clone();
    let trained = train(
        Arc::new(set.clone()),
        &params(),
        &Device::flex(),
        &dir.path().join("run"),
        None,
        Arc::new(move |p| seen.lock().unwrap().push(p)),
        Interrupter::new(),
    )
    .unwrap();
    let ba = trained.evaluation.balanced_accuracy.unwrap();
    assert!(
        ba.value >= 0.95,
        "balanced accuracy {ba:?}; slides {:?}",
        trained.slides
    );
    assert!(trained.evaluation.auc.unwrap().value >= 0.95);
    assert_eq!(trained.slides.len(), test_slides);
    // Progress came per batch and per epoch metric.
    let events = events.lock().unwrap();
    assert!(
        events
            .iter()
            .any(|e| matches!(e, Progress::Items { epoch: 4, split, .. } if split == "train"))
    );
    let losses: Vec<f64> = trained
        .history
        .iter()
        .filter(|m| m.split == "train" && m.name == "Loss")
        .map(|m| m.value)
        .collect();
    assert_eq!(losses.len(), 4, "{:?}", trained.history);
    // Every epoch's mean loss is far below chance (ln 2 for two balanced classes), and a later
    // epoch improves on the first. Not "the last below the first": on so easy a task the model
    // is near its best within the first epoch, and one unlucky batch can lift a later epoch's
    // mean (measured: 0.055, 0.100, 0.002, 0.059).
    let chance = std::f64::consts::LN_2;
    assert!(
        losses.iter().all(|&loss| loss < chance / 4.0),
        "training loss stays far below chance ({chance:.3}): {losses:?}"
    );
    let best_later = losses[1..].iter().copied().fold(f64::INFINITY, f64::min);
    assert!(best_later < losses[0], "training loss falls: {losses:?}");

    // An attention-MIL head on the frozen model's embeddings, trained from slide labels only,
    // classifies the test slides as well.
    let set = Arc::new(set);
    let device = Device::flex();
    let (train_bags, features) =
        mil::embed_split(&trained.model, &set, "train", 64, 32, &device).unwrap();
    let (valid_bags, _) = mil::embed_split(&trained.model, &set, "val", 64, 32, &device).unwrap();
    let labels: Vec<usize> = set.slides.iter().map(|s| s.label).collect();
    let config = MilConfig {
        features,
        hidden: 64,
        classes: 2,
        pooling: pathfed_models::mil::Pooling::Attention,
    };
    let options = mil::FitOptions {
        epochs: 40,
        lr: 1e-3,
        seed: 5,
    };
    let (head, losses) =
        mil::fit(&train_bags, &valid_bags, &labels, &config, options, &device).unwrap();
    // Each epoch reports its mean training and validation loss, for the run's curves.
    assert_eq!(losses.len(), 80);
    assert!(
        losses
            .iter()
            .all(|m| m.name == "Loss" && m.value.is_finite())
    );
    let aggregator = Aggregator { config, head };
    let (attention, _) = pathfed_training::run::evaluate_attention(
        &trained.model,
        &aggregator,
        &set,
        "test",
        64,
        32,
        "TEX-STROMA",
        0.5,
        5,
        &device,
    )
    .unwrap();
    let ba = attention.balanced_accuracy.unwrap().value;
    assert!(ba >= 0.95, "attention pooling: balanced accuracy {ba}");
    let set = Arc::unwrap_or_clone(set);

    // The control: labels shuffled across training slides teach nothing about the test split.
    let control = run(
        &set,
        &TrainParams {
            shuffle_labels: true,
            ..params()
        },
        &dir.path().join("control"),
        None,
    );
    // AUC alone would not do: tiny, consistent differences between textures still rank
    // perfectly. What must be gone is any usable separation of the scores.
    let gap = |run: &TrainedRun| {
        let mean = |label: &str| {
            let s: Vec<f64> = run
                .slides
                .iter()
                .filter(|s| s.label == label)
                .map(|s| s.score)
                .collect();
            s.iter().sum::<f64>() / s.len() as f64
        };
        (mean("TEX-STROMA") - mean("TEX-DENSE")).abs()
    };
    let ba = control.evaluation.balanced_accuracy.unwrap().value;
    eprintln!(
        "score gap: trained {:.3}, shuffled {:.3}; shuffled BA {ba}",
        gap(&trained),
        gap(&control)
    );
    assert!(gap(&trained) > 0.8, "trained: {:?}", trained.slides);
    assert!(
        ba <= 0.75 && gap(&control) < 0.1,
        "shuffled labels still learnt: BA {ba}, {:?}",
        control.slides
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_resumed_run_ends_with_the_same_model_as_an_uninterrupted_one() {
    let dir = tempfile::tempdir().unwrap();
    let set = dataset(dir.path()).await;
    let p = TrainParams {
        epochs: 3,
        ..params()
    };
    let straight = run(&set, &p, &dir.path().join("straight"), None);
    // The same run, cancelled once epoch 2 has begun: only epoch 1's checkpoint exists.
    let stopped = dir.path().join("stopped");
    let interrupter = Interrupter::new();
    let stop = interrupter.clone();
    let cancelled = train(
        Arc::new(set.clone()),
        &p,
        &Device::flex(),
        &stopped,
        None,
        Arc::new(move |e| {
            if matches!(e, Progress::Items { epoch: 2, .. }) {
                stop.stop(Some("cancelled"));
            }
        }),
        interrupter,
    )
    .unwrap();
    assert_eq!(cancelled.interrupted.as_deref(), Some("cancelled"));
    assert!(!stopped.join("checkpoint/model-2.bpk").exists());
    let resumed = run(&set, &p, &stopped, Some(1));
    for (a, b) in straight.slides.iter().zip(&resumed.slides) {
        assert_eq!(a.slide, b.slide);
        assert!((a.score - b.score).abs() < 1e-9, "{a:?} vs {b:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn unusable_requests_are_refused_before_training() {
    let dir = tempfile::tempdir().unwrap();
    let set = dataset(dir.path()).await;
    let refused = |p: TrainParams, set: &PatchSet, needle: &str| {
        let err = check(set, &p).unwrap_err().to_string();
        assert!(err.contains(needle), "{err:?} lacks {needle:?}");
    };
    refused(
        TrainParams {
            batch: 100_000,
            ..params()
        },
        &set,
        "larger than the train split",
    );
    refused(
        TrainParams {
            epochs: 0,
            ..params()
        },
        &set,
        "at least 1",
    );
    refused(
        TrainParams {
            positive: Some("NOPE".into()),
            ..params()
        },
        &set,
        "not among",
    );
    let mut one_class = set.clone();
    for s in &mut one_class.slides {
        s.label = 0;
    }
    refused(params(), &one_class, "one class only");
    let mut no_test = set.clone();
    for s in &mut no_test.slides {
        if s.split == "test" {
            s.split = "train".into();
        }
    }
    refused(params(), &no_test, "test split has no patches");
    // Resuming a run that has no checkpoint says so.
    let err = train(
        Arc::new(set.clone()),
        &params(),
        &Device::flex(),
        &dir.path().join("never"),
        Some(2),
        Arc::new(|_| {}),
        Interrupter::new(),
    )
    .err()
    .unwrap()
    .to_string();
    assert!(err.contains("no checkpoint of epoch 2"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn prefetched_batches_are_the_batches_a_plain_read_gives() {
    use burn::data::dataset::Dataset as _;
    use pathfed_training::augment::Augment;
    use pathfed_training::batch::SplitDataset;

    let dir = tempfile::tempdir().unwrap();
    let set = Arc::new(dataset(dir.path()).await);
    let train = set.split("train");
    let make = || {
        SplitDataset::new(
            set.clone(),
            train.clone(),
            64,
            Augment::default(),
            true,
            9,
            1,
        )
    };
    // Batches read in order (each one prefetched during the previous) over two epochs...
    let batched = make();
    let mut in_batches = Vec::new();
    for _ in 0..2 {
        let positions: Vec<usize> = (0..train.len()).collect();
        for chunk in positions.chunks(7) {
            in_batches.extend(batched.get_many(chunk.to_vec()).unwrap());
        }
    }
    // ...equal patch-by-patch reads, which never prefetch.
    let single = make();
    let one_by_one: Vec<_> = (0..2)
        .flat_map(|_| {
            (0..train.len())
                .map(|i| single.get(i).unwrap())
                .collect::<Vec<_>>()
        })
        .collect();
    assert_eq!(in_batches.len(), one_by_one.len());
    for (a, b) in in_batches.iter().zip(&one_by_one) {
        assert_eq!((a.patch, a.label), (b.patch, b.label));
        assert_eq!(a.rgb, b.rgb, "patch {}", a.patch);
    }
    // The second epoch is another order, with other augmentations.
    let n = train.len();
    assert_ne!(
        in_batches[..n].iter().map(|i| i.patch).collect::<Vec<_>>(),
        in_batches[n..].iter().map(|i| i.patch).collect::<Vec<_>>()
    );
}

/// A small random ViT written to a pretrained folder as a researcher would place one: class
/// token and patch-token mean, 64 px input so the texture patches go in unresized. Without
/// `weights` only its description is written.
fn tiny_encoder(pretrained: &std::path::Path, name: &str, mean: f32, weights: bool) {
    use pathfed_models::vit::{EncoderSpec, Mlp, Pool, Preprocess, Vit, VitConfig};
    let spec = EncoderSpec {
        vit: VitConfig {
            patch: 8,
            dim: 32,
            depth: 2,
            heads: 4,
            mlp: Mlp::Gelu,
            mlp_hidden: 64,
            registers: 0,
            pos_embed_prefix: true,
            layer_scale: false,
            pool: Pool::ClassAndMean,
            grid: 8,
            norm_eps: 1e-6,
        },
        preprocess: Preprocess {
            input_px: 64,
            mean: [mean; 3],
            std: [0.25; 3],
            mpp: 1.0,
        },
    };
    std::fs::create_dir_all(pretrained).unwrap();
    std::fs::write(
        pretrained.join(format!("{name}.json")),
        serde_json::to_vec(&spec).unwrap(),
    )
    .unwrap();
    if !weights {
        return;
    }
    let device = Device::flex();
    device.seed(3);
    let model = Vit::new(&spec.vit, &device);
    pathfed_models::vit::import::save_timm(&model, &pretrained.join(format!("{name}.safetensors")))
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_frozen_encoder_and_abmil_learn_textures_with_stored_embeddings() {
    use pathfed_training::embed::{Encoder, bags, extract};
    use pathfed_training::heads::{HeadParams, train_head};
    use std::sync::atomic::AtomicBool;

    let dir = tempfile::tempdir().unwrap();
    let store = open_store(
        &format!("file://{}", dir.path().join("objects").display()),
        &S3Config::default(),
    )
    .unwrap();
    let work = dir.path().join("slides");
    std::fs::create_dir_all(&work).unwrap();
    let manifest = texture_dataset(&store, &work, "textures", &TextureSpec::default())
        .await
        .unwrap();
    let hash = manifest.content.extraction.as_ref().unwrap()["params_hash"]
        .as_str()
        .unwrap()
        .to_string();
    let set = PatchSet::fetch(&store, &manifest, &dir.path().join("cache"), |_, _| {})
        .await
        .unwrap();
    let pretrained = dir.path().join("pretrained");
    tiny_encoder(&pretrained, "tiny", 0.5, true);
    let device = Device::flex();
    let encoder = Encoder::open(&pretrained, "tiny", &device).unwrap();
    let runtime = tokio::runtime::Handle::current();
    let never = AtomicBool::new(false);
    let embed = |encoder: &Encoder| {
        tokio::task::block_in_place(|| {
            extract(
                &runtime,
                &store,
                &set,
                &hash,
                encoder,
                32,
                &|_, _| {},
                &|_| true,
                &never,
            )
            .unwrap()
        })
    };
    let first = embed(&encoder);
    assert_eq!((first.computed, first.reused), (24, 0), "{first:?}");
    assert_eq!(first.encoded, set.patches.len());
    // A second run finds every slide stored: the encoder runs on nothing.
    let again = embed(&encoder);
    assert_eq!((again.computed, again.reused, again.encoded), (0, 24, 0));
    assert_eq!(again.key, first.key);
    // The same weights with other preprocessing are other embeddings.
    std::fs::copy(
        pretrained.join("tiny.safetensors"),
        pretrained.join("tiny-other.safetensors"),
    )
    .unwrap();
    tiny_encoder(&pretrained, "tiny-other", 0.4, false);
    let other = Encoder::open(&pretrained, "tiny-other", &device).unwrap();
    let changed = embed(&other);
    assert_eq!((changed.computed, changed.reused), (24, 0));
    assert_ne!(changed.key, first.key);

    let (slide_bags, features) = tokio::task::block_in_place(|| {
        bags(&runtime, &store, &set, &first.key, &Default::default())
    })
    .unwrap();
    assert_eq!(features, 64);
    let params = HeadParams {
        folds: 5,
        ..HeadParams::default()
    };
    let run = train_head(&set, &slide_bags, features, &params, &device).unwrap();
    let ba = run.evaluation.balanced_accuracy.unwrap().value;
    assert!(
        ba >= 0.95,
        "ABMIL on frozen embeddings: balanced accuracy {ba}, {:?}",
        run.slides
    );
    let cv = run.cross_validation.unwrap();
    assert_eq!(cv.per_fold.len(), 5);
    let cv_ba = cv.summary["balanced_accuracy"];
    eprintln!(
        "test BA {ba}; 5-fold CV BA {:.3} ± {:.3}",
        cv_ba.mean, cv_ba.sd
    );
    assert!(cv_ba.mean >= 0.9, "{cv:?}");
    assert_eq!(
        cv.pooled.cases, 16,
        "every training and validation slide scored once"
    );
    // The TransMIL-style head learns the same slides from the same stored embeddings.
    let transmil = HeadParams {
        pooling: pathfed_models::mil::Pooling::Transformer,
        folds: 0,
        ..params.clone()
    };
    let run = train_head(&set, &slide_bags, features, &transmil, &device).unwrap();
    let ba = run.evaluation.balanced_accuracy.unwrap().value;
    eprintln!("TransMIL test BA {ba}");
    assert!(
        ba >= 0.95,
        "TransMIL on frozen embeddings: balanced accuracy {ba}, {:?}",
        run.slides
    );

    // The control: shuffled training labels leave the head at chance on the test split.
    let mut shuffled = set.clone();
    shuffled.shuffle_train_slide_labels(7);
    let control = train_head(
        &shuffled,
        &slide_bags,
        features,
        &HeadParams { folds: 0, ..params },
        &device,
    )
    .unwrap();
    let ba = control.evaluation.balanced_accuracy.unwrap().value;
    assert!(
        ba <= 0.75,
        "shuffled labels still learnt: BA {ba}, {:?}",
        control.slides
    );
}
