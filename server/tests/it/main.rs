//! The server's integration tests, as one test binary.
//!
//! Every file here used to be a test program of its own, each linked against the whole
//! dependency tree (the server, the slide readers, training, inference, the database and object
//! store clients); linking that tree once instead of once per file saves most of the tests'
//! build time. The former files are the modules below, so `cargo test -p pathfed --test it
//! consult::` runs what `--test consult` ran. `support` starts real servers (the `pathfed`
//! binary) on real backends; its throwaway PostgreSQL cluster and S3 server are now started
//! once for all of these tests, and every test still gets its own database, bucket and data
//! folder.

// Test code: a failed step should panic with its cause. Here at the root too, so that it also
// covers `support`, which each former test program's own root used to cover.
#![allow(clippy::unwrap_used)]

mod support;

mod admin_console;
mod anonymity;
mod atomic;
mod audit;
mod audit_chain;
mod backup;
mod bad_input;
mod browser;
mod caching;
mod cli_slide;
mod clinical;
mod consent;
mod consult;
mod dicom_intake;
mod dicomweb;
mod i18n;
mod iiif;
mod inference;
mod inference_slides;
mod jobs;
mod language;
mod measure;
mod notifications;
mod openapi;
mod passwords;
mod processes;
mod quota;
mod report_ja;
mod research;
mod roles;
mod scale_out;
mod second_factor;
mod sessions;
mod stow;
mod tenancy;
mod tls;
mod training;
mod tus;
mod worklist;
