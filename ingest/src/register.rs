//! Turning a complete upload into a registered slide: digest check, unzip (and the upload
//! quota checked again against what the zip unpacks to; a zip of DICOM instances is one
//! series, opened from its largest instance), validation in a child process,
//! storage in the clinical tier, the slide row (its size: the bytes stored), the audit entry.
//!
//! Identical bytes from the same hospital register once: a second upload returns the first
//! slide. Whatever fails, nothing half-made stays behind: the work folder always goes, stored
//! objects are deleted if the row cannot be written.

use std::path::{Path, PathBuf};

use axum::http::StatusCode;
use pathfed_core::accounts::Principal;
use pathfed_core::audit::AuditEvent;
use pathfed_core::cache::SlideFile;
use pathfed_core::db::{new_id, now};
use pathfed_core::http::ApiError;
use pathfed_core::store::{adopt_file, delete_prefix, put_file};

use crate::names::sanitise;
use crate::slides::{self, Slide, slide_prefix, thumbnail_key};
use crate::unzip::{dicom_main_file, has_dicom_magic, is_zip, main_file, unpack};
use crate::upload::UploadRow;
use crate::validate::validate_in_child;
use crate::{Ingest, keyed_lock};
use pathfed_core::digest::sha256_file;

/// SHA-256 (hex) of a file, hashed off the async threads.
pub async fn hash_file(path: &Path) -> std::io::Result<String> {
    let path = path.to_path_buf();
    tokio::task::spawn_blocking(move || sha256_file(&path, |_| {}))
        .await
        .map_err(std::io::Error::other)?
}

/// Registers the staged upload; returns the new (or identical existing) slide. The caller
/// holds the staging file's lock (`tus::StagedFile`) throughout, so no replica sharing the
/// staging folder changes the bytes while they are checked and stored.
pub(crate) async fn complete(
    ingest: &Ingest,
    upload: &UploadRow,
    user: &Principal,
    digest: Option<String>,
) -> Result<Slide, ApiError> {
    let staged = ingest.staged_path(&upload.id);
    let digest = match digest {
        Some(d) => d,
        None => hash_file(&staged).await.map_err(ApiError::internal)?,
    };
    if digest != upload.sha256 {
        return Err(ApiError::bad_request(
            "digest_mismatch",
            format!(
                "the received file's SHA-256 is {digest}, not the {} announced; upload it again",
                upload.sha256
            ),
        ));
    }
    let key = (upload.hospital_id.clone(), digest.clone());
    let gate = keyed_lock(&ingest.inner.registrations, &key);
    let _one_at_a_time = gate.lock().await;
    let db = &ingest.platform().db;
    if let Some(existing) = slides::find_by_digest(db, &upload.hospital_id, &digest).await? {
        tracing::info!(slide = %existing.id, "identical upload: returning the registered slide");
        return Ok(existing);
    }
    // Checked again now the bytes are here: uploads created side by side, or a quota lowered
    // since this one started, may leave no room for it after all.
    pathfed_core::quota::check_completion(db, &upload.hospital_id, &upload.id, upload.length)
        .await?;
    let work = ingest.work_dir(&upload.id);
    let _ = tokio::fs::remove_dir_all(&work).await;
    tokio::fs::create_dir_all(&work)
        .await
        .map_err(ApiError::internal)?;
    let result = build(ingest, upload, user, &staged, &work).await;
    let _ = tokio::fs::remove_dir_all(&work).await;
    result
}

async fn build(
    ingest: &Ingest,
    upload: &UploadRow,
    user: &Principal,
    staged: &Path,
    work: &Path,
) -> Result<Slide, ApiError> {
    let platform = ingest.platform();
    let config = &platform.config;
    let unpacked = work.join("files");
    tokio::fs::create_dir_all(&unpacked)
        .await
        .map_err(ApiError::internal)?;
    let zipped = is_zip(staged).map_err(ApiError::internal)?;
    let (relative_files, main) = if zipped {
        let (zip, dest, limits) = (
            staged.to_path_buf(),
            unpacked.clone(),
            config.ingest.clone(),
        );
        let (files, main) = tokio::task::spawn_blocking(move || {
            let files = unpack(&zip, &dest, &limits)?;
            // Slide files by name first; DICOM instances have no telling name, so by content.
            let main = match main_file(&files) {
                Some(main) => Some(main),
                None => dicom_main_file(&dest, &files).map_err(ApiError::internal)?,
            };
            Ok::<_, ApiError>((files, main))
        })
        .await
        .map_err(ApiError::internal)??;
        let main = main.ok_or_else(|| {
            ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "not_a_slide",
                "the zip holds no slide file (.mrxs, .vms, .svs, .tif, .ndpi, …) \
                 or DICOM instances",
            )
        })?;
        // The unpacked files are what is stored, up to `zip_max_ratio` times the zip's size:
        // the quota counts them, not the zip (only its length was checked so far).
        let mut unpacked_bytes: u64 = 0;
        for relative in &files {
            let size = tokio::fs::metadata(unpacked.join(relative))
                .await
                .map_err(ApiError::internal)?
                .len();
            unpacked_bytes = unpacked_bytes.saturating_add(size);
        }
        pathfed_core::quota::check_completion(
            &platform.db,
            &upload.hospital_id,
            &upload.id,
            unpacked_bytes,
        )
        .await?;
        (files, main)
    } else {
        // One DICOM instance is one level or image of a series, and nothing in it says whether
        // the series has others: read alone it would register as whatever part it is.
        if has_dicom_magic(staged).map_err(ApiError::internal)? {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "not_a_slide",
                "a DICOM whole-slide image is a series of instances (its levels, label and \
                 overview); upload them together as one zip of all the series' files",
            ));
        }
        // A link, not a move: if a later step fails on our side the staged bytes remain.
        let name = sanitise(&upload.filename);
        tokio::fs::hard_link(staged, unpacked.join(&name))
            .await
            .map_err(ApiError::internal)?;
        (vec![name.clone()], name)
    };
    let thumbnail = work.join("thumbnail.jpg");
    let report = validate_in_child(
        &ingest.inner.validator,
        &unpacked.join(&main),
        &thumbnail,
        &config.slide,
        &config.ingest,
    )
    .await?;

    let slide_id = new_id();
    let prefix = slide_prefix(&upload.hospital_id, &slide_id);
    let mut files = Vec::with_capacity(relative_files.len());
    let mut stored_bytes: u64 = 0;
    for relative in &relative_files {
        let local = unpacked.join(relative);
        let size = tokio::fs::metadata(&local)
            .await
            .map_err(ApiError::internal)?
            .len();
        stored_bytes = stored_bytes.saturating_add(size);
        let sha256 = if zipped {
            hash_file(&local).await.map_err(ApiError::internal)?
        } else {
            upload.sha256.clone()
        };
        files.push((
            local,
            SlideFile {
                key: format!("{prefix}/original/{relative}"),
                path: relative.clone(),
                size,
                sha256,
            },
        ));
    }
    let slide = Slide {
        id: slide_id.clone(),
        hospital_id: upload.hospital_id.clone(),
        uploaded_by: user.username.clone(),
        filename: upload.filename.clone(),
        sha256: upload.sha256.clone(),
        // What is stored (a zip's unpacked files), as the quota counts it.
        size_bytes: i64::try_from(stored_bytes).map_err(ApiError::internal)?,
        main_file: main,
        files: files.iter().map(|(_, f)| f.clone()).collect(),
        format: report.format.clone(),
        vendor: report.vendor.clone(),
        width: report.width as i64,
        height: report.height as i64,
        levels: report.levels as i64,
        mpp_x: report.mpp_x,
        mpp_y: report.mpp_y,
        objective_power: report.objective_power,
        has_label: report.has_label,
        properties: serde_json::to_string(&report.properties).map_err(ApiError::internal)?,
        created_at: now(),
    };
    let stored = store_and_insert(ingest, &slide, user, &files, &thumbnail).await;
    match stored {
        Ok(slide) => {
            let _ = platform
                .audit(
                    AuditEvent::by(user, "slide.upload", &format!("slide:{}", slide.id), "ok")
                        .detail(format!("{} ({} bytes)", slide.filename, slide.size_bytes)),
                )
                .await;
            Ok(slide)
        }
        Err(e) => {
            if let Err(cleanup) = delete_prefix(&platform.store, &prefix).await {
                tracing::error!(prefix, error = %cleanup, "cannot remove objects of a failed upload");
            }
            Err(e)
        }
    }
}

async fn store_and_insert(
    ingest: &Ingest,
    slide: &Slide,
    user: &Principal,
    files: &[(PathBuf, SlideFile)],
    thumbnail: &Path,
) -> Result<Slide, ApiError> {
    let platform = ingest.platform();
    // The work folder's files are ours alone and go afterwards: adopt rather than copy.
    for (local, file) in files {
        adopt_file(&platform.store, &file.key, local).await?;
    }
    put_file(
        &platform.store,
        &thumbnail_key(&slide.hospital_id, &slide.id),
        thumbnail,
    )
    .await?;
    match slides::insert(&platform.db, slide, &user.id).await {
        Ok(()) => Ok(slide.clone()),
        Err(e) if e.is_unique_violation() => {
            // Another server registered the same bytes first: theirs stands, ours goes.
            delete_prefix(
                &platform.store,
                &slide_prefix(&slide.hospital_id, &slide.id),
            )
            .await?;
            slides::find_by_digest(&platform.db, &slide.hospital_id, &slide.sha256)
                .await?
                .ok_or_else(|| ApiError::internal("slide vanished after a duplicate insert"))
        }
        Err(e) => Err(e.into()),
    }
}
