//! Turning what arrived into a registered slide. Every way in ends in the same steps
//! (`register_folder`): validation in a child process, storage in the clinical tier, the slide
//! row (its size: the bytes stored), the `slide.upload` audit entry.
//!
//! - A tus upload (`complete`): digest check, then a zip is unpacked (and the upload quota
//!   checked again against what it unpacks to; a zip of DICOM instances is one series, opened
//!   from its largest instance), a lone DICOM instance is refused (it is one level of a
//!   series), any other file is registered as it is.
//! - A DICOM series received instance by instance over STOW-RS (`register_series`, called by
//!   `stow`): its files already lie in a folder; the slide's digest is the SHA-256 of its
//!   instances' SHA-256s, sorted, and its name `<Series Instance UID>.dcm-series`.
//!
//! Identical bytes from the same hospital register once (a per-(hospital, digest) lock,
//! `claim`, plus the table's unique index): a second arrival returns the first slide.
//! Whatever fails, nothing half-made stays behind: the caller removes the work folder, stored
//! objects are deleted if the row cannot be written.

use std::path::{Path, PathBuf};

use axum::http::StatusCode;
use pathfed_core::accounts::Principal;
use pathfed_core::audit::AuditEvent;
use pathfed_core::cache::SlideFile;
use pathfed_core::db::{new_id, now};
use pathfed_core::digest::sha256_file;
use pathfed_core::http::ApiError;
use pathfed_core::store::{adopt_file, delete_prefix, put_file};
use sha2::{Digest, Sha256};

use crate::names::sanitise;
use crate::slides::{self, Slide, slide_prefix, thumbnail_key};
use crate::unzip::{dicom_main_file, has_dicom_magic, is_zip, main_file, unpack};
use crate::upload::UploadRow;
use crate::validate::validate_in_child;
use crate::{Ingest, keyed_lock};

/// SHA-256 (hex) of a file, hashed off the async threads.
pub async fn hash_file(path: &Path) -> std::io::Result<String> {
    let path = path.to_path_buf();
    tokio::task::spawn_blocking(move || sha256_file(&path, |_| {}))
        .await
        .map_err(std::io::Error::other)?
}

/// A slide about to be registered: whose it is, what it is called, and the digest that makes
/// identical arrivals one slide.
struct Arrival<'a> {
    /// The owning hospital.
    hospital_id: &'a str,
    /// The name shown for the slide (never a path).
    filename: &'a str,
    /// The slide's SHA-256 (hex), its key for deduplication.
    sha256: &'a str,
}

/// One of a slide's files in its work folder: the path relative to the folder (already
/// sanitised), and its SHA-256 where already known.
struct WorkFile {
    /// Relative path, also the name under the slide's `original/` objects.
    relative: String,
    /// SHA-256 (hex), hashed from disk when `None`.
    sha256: Option<String>,
}

/// The outcome of [`claim`]: the slide those bytes already became, or the right to register
/// them (held until dropped).
enum Claim {
    Existing(Box<Slide>),
    Yours(tokio::sync::OwnedMutexGuard<()>),
}

/// Takes the registration of `arrival`'s digest for its hospital, so identical arrivals in
/// parallel make one slide; returns the slide already registered with that digest if there is
/// one, else checks the quota for `incoming` bytes (leaving out the reservation of upload
/// `reservation`, which a STOW request does not have).
async fn claim(
    ingest: &Ingest,
    arrival: &Arrival<'_>,
    reservation: &str,
    incoming: u64,
) -> Result<Claim, ApiError> {
    let key = (arrival.hospital_id.to_string(), arrival.sha256.to_string());
    let held = keyed_lock(&ingest.inner.registrations, &key)
        .lock_owned()
        .await;
    let db = &ingest.platform().db;
    if let Some(existing) = slides::find_by_digest(db, arrival.hospital_id, arrival.sha256).await? {
        tracing::info!(slide = %existing.id, "identical upload: returning the registered slide");
        return Ok(Claim::Existing(Box::new(existing)));
    }
    // Checked again now the bytes are here: uploads created side by side, or a quota lowered
    // since this one started, may leave no room for it after all.
    pathfed_core::quota::check_completion(db, arrival.hospital_id, reservation, incoming).await?;
    Ok(Claim::Yours(held))
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
    let arrival = Arrival {
        hospital_id: &upload.hospital_id,
        filename: &upload.filename,
        sha256: &digest,
    };
    let _one_at_a_time = match claim(ingest, &arrival, &upload.id, upload.length).await? {
        Claim::Existing(slide) => return Ok(*slide),
        Claim::Yours(held) => held,
    };
    let work = ingest.work_dir(&upload.id);
    let _ = tokio::fs::remove_dir_all(&work).await;
    tokio::fs::create_dir_all(&work)
        .await
        .map_err(ApiError::internal)?;
    let result = build(ingest, upload, user, &arrival, &staged, &work).await;
    let _ = tokio::fs::remove_dir_all(&work).await;
    result
}

/// Lays a tus upload out in `work` as the files of a slide (a zip unpacked, any other file
/// linked), then registers them.
async fn build(
    ingest: &Ingest,
    upload: &UploadRow,
    user: &Principal,
    arrival: &Arrival<'_>,
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
    let (files, main) = if zipped {
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
        let unpacked_bytes = total_size(&unpacked, &files).await?;
        pathfed_core::quota::check_completion(
            &platform.db,
            &upload.hospital_id,
            &upload.id,
            unpacked_bytes,
        )
        .await?;
        let files: Vec<WorkFile> = files
            .into_iter()
            .map(|relative| WorkFile {
                relative,
                sha256: None,
            })
            .collect();
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
        let file = WorkFile {
            relative: name.clone(),
            sha256: Some(upload.sha256.clone()),
        };
        (vec![file], name)
    };
    register_folder(ingest, user, arrival, &unpacked, files, main, work).await
}

/// Registers one DICOM series received instance by instance (STOW-RS): `folder` holds exactly
/// its instance files, given with their SHA-256s (hex), each named by its sanitised relative
/// path; `work` is a folder of this registration's own for the thumbnail.
///
/// The slide's digest, its key for deduplication, is the SHA-256 of the instances' digests
/// sorted and each followed by a newline, so the same series pushed again, in any order,
/// registers once. Its name is `<series>.dcm-series`. It is opened, like a zip of instances,
/// from its largest instance, which the reader completes with its siblings of the same series.
pub(crate) async fn register_series(
    ingest: &Ingest,
    user: &Principal,
    series: &str,
    folder: &Path,
    instances: Vec<(String, String)>,
    work: &Path,
) -> Result<Slide, ApiError> {
    let mut digests: Vec<&str> = instances.iter().map(|(_, d)| d.as_str()).collect();
    digests.sort_unstable();
    let mut hasher = Sha256::new();
    for digest in digests {
        hasher.update(digest.as_bytes());
        hasher.update(b"\n");
    }
    let digest = hex::encode(hasher.finalize());
    let filename = format!("{series}.dcm-series");
    let arrival = Arrival {
        hospital_id: &user.hospital.id,
        filename: &filename,
        sha256: &digest,
    };
    let relative: Vec<String> = instances.iter().map(|(r, _)| r.clone()).collect();
    let bytes = total_size(folder, &relative).await?;
    // No upload reserved these bytes: nothing to leave out of the usage.
    let _one_at_a_time = match claim(ingest, &arrival, "", bytes).await? {
        Claim::Existing(slide) => return Ok(*slide),
        Claim::Yours(held) => held,
    };
    let (dir, names) = (folder.to_path_buf(), relative);
    let main = tokio::task::spawn_blocking(move || dicom_main_file(&dir, &names))
        .await
        .map_err(ApiError::internal)?
        .map_err(ApiError::internal)?
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "not_a_slide",
                format!("series {series} holds no DICOM instance"),
            )
        })?;
    let files: Vec<WorkFile> = instances
        .into_iter()
        .map(|(relative, sha256)| WorkFile {
            relative,
            sha256: Some(sha256),
        })
        .collect();
    register_folder(ingest, user, &arrival, folder, files, main, work).await
}

/// Bytes of `files` (relative to `dir`) on disk.
async fn total_size(dir: &Path, files: &[String]) -> Result<u64, ApiError> {
    let mut total: u64 = 0;
    for relative in files {
        let size = tokio::fs::metadata(dir.join(relative))
            .await
            .map_err(ApiError::internal)?
            .len();
        total = total.saturating_add(size);
    }
    Ok(total)
}

/// The one registration of every way in: validates the slide that `main` opens (in the child
/// process), stores `files` (relative to `folder`) and the thumbnail (written in `work`),
/// writes the slide row and audits `slide.upload`. The caller holds the digest's [`claim`].
async fn register_folder(
    ingest: &Ingest,
    user: &Principal,
    arrival: &Arrival<'_>,
    folder: &Path,
    files: Vec<WorkFile>,
    main: String,
    work: &Path,
) -> Result<Slide, ApiError> {
    let platform = ingest.platform();
    let config = &platform.config;
    let thumbnail = work.join("thumbnail.jpg");
    let report = validate_in_child(
        &ingest.inner.validator,
        &folder.join(&main),
        &thumbnail,
        &config.slide,
        &config.ingest,
    )
    .await?;

    let slide_id = new_id();
    let prefix = slide_prefix(arrival.hospital_id, &slide_id);
    let mut stored = Vec::with_capacity(files.len());
    let mut stored_bytes: u64 = 0;
    for file in files {
        let local = folder.join(&file.relative);
        let size = tokio::fs::metadata(&local)
            .await
            .map_err(ApiError::internal)?
            .len();
        stored_bytes = stored_bytes.saturating_add(size);
        let sha256 = match file.sha256 {
            Some(known) => known,
            None => hash_file(&local).await.map_err(ApiError::internal)?,
        };
        stored.push((
            local,
            SlideFile {
                key: format!("{prefix}/original/{}", file.relative),
                path: file.relative,
                size,
                sha256,
            },
        ));
    }
    let slide = Slide {
        id: slide_id.clone(),
        hospital_id: arrival.hospital_id.to_string(),
        uploaded_by: user.username.clone(),
        filename: arrival.filename.to_string(),
        sha256: arrival.sha256.to_string(),
        // What is stored (a zip's unpacked files), as the quota counts it.
        size_bytes: i64::try_from(stored_bytes).map_err(ApiError::internal)?,
        main_file: main,
        files: stored.iter().map(|(_, f)| f.clone()).collect(),
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
    match store_and_insert(ingest, &slide, user, &stored, &thumbnail).await {
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
