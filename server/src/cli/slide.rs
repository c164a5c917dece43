//! `pathfed slide ...`: information, Deep Zoom pyramids, thumbnails, associated images and
//! synthetic test slides.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, bail};
use clap::{Args, Subcommand, ValueEnum};
use pathfed_core::Config;
use pathfed_slide::deepzoom::{DeepZoom, DeepZoomOptions};
use pathfed_slide::{SlideReader, thumbnail};
use pathfed_synth::{ClassLayout, SynthCompression, SynthFormat, SynthSpec, TissueClass};

use super::progress;

#[derive(Debug, Subcommand)]
pub enum SlideCommand {
    /// Print format, levels, MPP, associated images and properties.
    Info {
        /// The slide file.
        file: PathBuf,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Write a complete Deep Zoom pyramid (NAME.dzi and NAME_files/).
    Tiles {
        /// The slide file.
        file: PathBuf,
        /// Output directory (created if missing).
        #[arg(long)]
        out: PathBuf,
        /// Base name of the .dzi and _files directory (default: the file's stem).
        #[arg(long)]
        name: Option<String>,
        /// Tile size; 0 uses the slide's own tile size so stored tiles pass through.
        #[arg(long)]
        tile_size: Option<u32>,
        /// Overlap between tiles in pixels.
        #[arg(long)]
        overlap: Option<u32>,
        /// JPEG quality of re-encoded tiles.
        #[arg(long)]
        quality: Option<u8>,
    },
    /// Write a thumbnail that fits in SIZE×SIZE (PNG or JPEG by the output's extension).
    Thumbnail {
        /// The slide file.
        file: PathBuf,
        /// Longest side in pixels.
        #[arg(long, default_value_t = 512)]
        size: u32,
        /// Output image (.png, .jpg or .jpeg).
        #[arg(long)]
        out: PathBuf,
    },
    /// Write an associated image (label, macro, thumbnail) to a file.
    Associated {
        /// The slide file.
        file: PathBuf,
        /// Image name, as `slide info` lists it.
        name: String,
        /// Output image (.png, .jpg or .jpeg).
        #[arg(long)]
        out: PathBuf,
    },
    /// Generate a synthetic pyramidal test slide.
    Synth(SynthArgs),
    /// Check that an untrusted file is a readable slide and write its thumbnail (the server
    /// runs this in a child process for every upload).
    Validate {
        /// The file to check.
        file: PathBuf,
        /// Where to write the thumbnail JPEG.
        #[arg(long)]
        thumbnail: PathBuf,
        /// Cap this process's address space (MiB) before touching the file.
        #[arg(long)]
        max_memory_mb: Option<u64>,
        /// Slide limits as JSON (default: from the configuration).
        #[arg(long)]
        limits_json: Option<String>,
        /// Print the verdict as JSON on stdout.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum FormatArg {
    Svs,
    GenericTiff,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum CompressionArg {
    Jpeg,
    JpegRgb,
    Lzw,
    Deflate,
    None,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LayoutArg {
    Regions,
    Columns,
}

#[derive(Debug, Args)]
pub struct SynthArgs {
    /// Output file.
    #[arg(long)]
    out: PathBuf,
    /// Level-0 width in pixels.
    #[arg(long, default_value_t = 4096)]
    width: u64,
    /// Level-0 height in pixels.
    #[arg(long, default_value_t = 3072)]
    height: u64,
    /// Tile size in pixels (a multiple of 16).
    #[arg(long, default_value_t = 256)]
    tile_size: u32,
    /// File layout.
    #[arg(long, value_enum, default_value_t = FormatArg::Svs)]
    format: FormatArg,
    /// Tile compression (default: jpeg-rgb for SVS, jpeg for generic TIFF).
    #[arg(long, value_enum)]
    compression: Option<CompressionArg>,
    /// JPEG quality.
    #[arg(long, default_value_t = 80)]
    quality: u8,
    /// Write a BigTIFF.
    #[arg(long)]
    bigtiff: bool,
    /// Micrometres per pixel at level 0.
    #[arg(long, default_value_t = 0.499)]
    mpp: f64,
    /// Objective magnification.
    #[arg(long, default_value_t = 20)]
    objective: u32,
    /// Tissue classes, comma-separated (nucleus-dense, stroma, adipose).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "nucleus-dense,stroma,adipose"
    )]
    classes: Vec<String>,
    /// How the classes share the tissue: irregular regions, or vertical bands from left to
    /// right in the order of --classes (a known layout, e.g. for checking AI heatmaps).
    #[arg(long, value_enum, default_value_t = LayoutArg::Regions)]
    layout: LayoutArg,
    /// Fraction of the slide covered by tissue.
    #[arg(long, default_value_t = 0.4)]
    tissue_fraction: f64,
    /// Seed of the layout and texture.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// A line of label text (repeat for more lines).
    #[arg(long = "label-line")]
    label_lines: Vec<String>,
    /// Barcode printed on the label.
    #[arg(long, default_value = "S-0001")]
    barcode: String,
    /// Metadata field KEY=VALUE (repeatable), e.g. --meta "Filename=patient 42".
    #[arg(long = "meta")]
    metadata: Vec<String>,
    /// Text hidden in places a careless copy keeps (JPEG comment and EXIF segment, label and
    /// macro descriptions, an unlinked directory): for checking de-identification.
    #[arg(long)]
    hidden_text: Option<String>,
}

pub fn run(cmd: SlideCommand, config: &Config) -> anyhow::Result<()> {
    match cmd {
        SlideCommand::Info { file, json } => info(&file, json, config),
        SlideCommand::Validate {
            file,
            thumbnail,
            max_memory_mb,
            limits_json,
            json,
        } => validate(
            &file,
            &thumbnail,
            max_memory_mb,
            limits_json.as_deref(),
            json,
            config,
        ),
        SlideCommand::Tiles {
            file,
            out,
            name,
            tile_size,
            overlap,
            quality,
        } => {
            let mut tiles = config.tiles.clone();
            tiles.tile_size = tile_size.unwrap_or(tiles.tile_size);
            tiles.overlap = overlap.unwrap_or(tiles.overlap);
            tiles.jpeg_quality = quality.unwrap_or(tiles.jpeg_quality);
            let slide: Arc<dyn SlideReader> = Arc::from(open(&file, config)?);
            let options = DeepZoomOptions::for_slide(slide.properties(), &tiles);
            let dz = DeepZoom::new(slide, options)?;
            let name = match name {
                Some(n) => n,
                None => file
                    .file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
                    .context("the file name has no stem; pass --name")?,
            };
            if name.contains(['/', '\\']) || name.starts_with('.') {
                bail!("--name must be a plain file name, not {name:?}");
            }
            let bar = progress::bar("tiling", "tiles");
            let stats = dz
                .write_pyramid(&out, &name, &progress::reporter(&bar))
                .with_context(|| format!("writing the Deep Zoom pyramid to {}", out.display()))?;
            bar.finish_and_clear();
            println!(
                "wrote {} ({} levels, {} tiles of {} px, overlap {}, {} passed through, {:.1} MB)",
                out.join(format!("{name}.dzi")).display(),
                dz.level_count(),
                stats.tiles,
                options.tile_size,
                options.overlap,
                stats.passthrough,
                stats.bytes as f64 / 1e6
            );
            Ok(())
        }
        SlideCommand::Thumbnail { file, size, out } => {
            let slide = open(&file, config)?;
            let image = thumbnail::thumbnail(slide.as_ref(), size)?;
            save(&image, &out)
        }
        SlideCommand::Associated { file, name, out } => {
            let slide = open(&file, config)?;
            let image = slide.associated_image(&name)?;
            save(&image, &out)
        }
        SlideCommand::Synth(args) => synth(args),
    }
}

fn open(file: &Path, config: &Config) -> anyhow::Result<Box<dyn SlideReader>> {
    pathfed_slide::open(file, &config.slide).with_context(|| format!("opening {}", file.display()))
}

/// Writes `image` as PNG or JPEG by the extension of `out`, and says so.
fn save(image: &image::RgbImage, out: &Path) -> anyhow::Result<()> {
    let ext = out
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    match ext.as_deref() {
        Some("png") => image.save_with_format(out, image::ImageFormat::Png)?,
        Some("jpg" | "jpeg") => std::fs::write(out, pathfed_slide::jpeg::encode_rgb(image, 90)?)?,
        _ => bail!(
            "{}: the output must end in .png, .jpg or .jpeg",
            out.display()
        ),
    }
    Ok(())
}

fn info(file: &Path, json: bool, config: &Config) -> anyhow::Result<()> {
    let slide = open(file, config)?;
    let p = slide.properties();
    if json {
        println!("{}", serde_json::to_string_pretty(p)?);
        return Ok(());
    }
    let (w, h) = p.dimensions();
    let opt = |v: Option<f64>| v.map_or_else(|| "unknown".to_string(), |v| format!("{v}"));
    println!("file:            {}", file.display());
    println!("format:          {} (read by {})", p.vendor, p.backend);
    println!("dimensions:      {w} × {h} px");
    println!(
        "MPP:             x {} µm/px, y {} µm/px",
        opt(p.mpp_x),
        opt(p.mpp_y)
    );
    println!("objective power: {}", opt(p.objective_power));
    if let Some(b) = p.bounds {
        println!(
            "bounds:          {}×{} at ({}, {})",
            b.width, b.height, b.x, b.y
        );
    }
    println!("levels:          {}", p.levels.len());
    for (i, l) in p.levels.iter().enumerate() {
        let tiles = l
            .tile_size
            .map_or_else(String::new, |(tw, th)| format!(", tiles {tw}×{th}"));
        println!(
            "  {i}: {} × {} px, downsample {:.3}{tiles}",
            l.width, l.height, l.downsample
        );
    }
    if p.associated_images.is_empty() {
        println!("associated:      none");
    } else {
        println!("associated:");
        for a in &p.associated_images {
            println!("  {}: {} × {} px", a.name, a.width, a.height);
        }
    }
    println!("properties:");
    for (k, v) in &p.raw {
        let v: String = v
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect();
        println!("  {k} = {v}");
    }
    Ok(())
}

fn synth(args: SynthArgs) -> anyhow::Result<()> {
    let classes = args
        .classes
        .iter()
        .map(|c| {
            TissueClass::parse(c).with_context(|| {
                format!("unknown tissue class {c:?} (nucleus-dense, stroma, adipose)")
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let metadata = args
        .metadata
        .iter()
        .map(|m| {
            m.split_once('=')
                .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
                .with_context(|| format!("--meta {m:?} is not KEY=VALUE"))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let format = match args.format {
        FormatArg::Svs => SynthFormat::Svs,
        FormatArg::GenericTiff => SynthFormat::GenericTiff,
    };
    let compression = match (args.compression, format) {
        (Some(CompressionArg::Jpeg), _) | (None, SynthFormat::GenericTiff) => {
            SynthCompression::Jpeg
        }
        (Some(CompressionArg::JpegRgb), _) | (None, SynthFormat::Svs) => SynthCompression::JpegRgb,
        (Some(CompressionArg::Lzw), _) => SynthCompression::Lzw,
        (Some(CompressionArg::Deflate), _) => SynthCompression::Deflate,
        (Some(CompressionArg::None), _) => SynthCompression::None,
    };
    let defaults = SynthSpec::default();
    let spec = SynthSpec {
        width: args.width,
        height: args.height,
        tile_size: args.tile_size,
        format,
        compression,
        jpeg_quality: args.quality,
        big_tiff: args.bigtiff,
        mpp: args.mpp,
        objective_power: args.objective,
        classes,
        layout: match args.layout {
            LayoutArg::Regions => ClassLayout::Regions,
            LayoutArg::Columns => ClassLayout::Columns,
        },
        tissue_fraction: args.tissue_fraction,
        seed: args.seed,
        label_lines: if args.label_lines.is_empty() {
            defaults.label_lines
        } else {
            args.label_lines
        },
        barcode: args.barcode,
        metadata,
        hidden_text: args.hidden_text,
    };
    let bar = progress::bar("generating", "tiles");
    let report = pathfed_synth::generate(&spec, &args.out, &progress::reporter(&bar))
        .with_context(|| format!("writing {}", args.out.display()))?;
    bar.finish_and_clear();
    let levels: Vec<String> = report
        .levels
        .iter()
        .map(|(w, h)| format!("{w}×{h}"))
        .collect();
    println!(
        "wrote {} ({} levels: {}; {} tiles; {:.1} MB)",
        args.out.display(),
        levels.len(),
        levels.join(", "),
        report.tiles,
        report.bytes as f64 / 1e6
    );
    Ok(())
}

fn validate(
    file: &Path,
    thumbnail: &Path,
    max_memory_mb: Option<u64>,
    limits_json: Option<&str>,
    json: bool,
    config: &Config,
) -> anyhow::Result<()> {
    use pathfed_ingest::validate::{limit_own_memory, validate_here};
    if let Some(mb) = max_memory_mb {
        limit_own_memory(mb).context("setting the memory limit")?;
    }
    let limits = match limits_json {
        Some(text) => serde_json::from_str(text).context("--limits-json")?,
        None => config.slide.clone(),
    };
    match validate_here(file, &limits, thumbnail) {
        Ok(report) => {
            if json {
                println!("{}", serde_json::to_string(&report)?);
            } else {
                println!(
                    "valid {} slide: {} x {} px, {} levels",
                    report.format, report.width, report.height, report.levels
                );
            }
            Ok(())
        }
        Err(failure) => {
            if json {
                println!("{}", serde_json::to_string(&failure)?);
                // The verdict is on stdout; the exit status says "refused".
                std::process::exit(2);
            }
            bail!("{} ({})", failure.message, failure.code)
        }
    }
}
