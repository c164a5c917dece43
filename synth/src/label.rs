//! Label and macro images, as slide scanners store beside the pyramid.
//!
//! The label is the paper sticker on the glass slide (hospital text and a barcode); the macro is a
//! low-resolution photo of the whole slide, label included. Text uses a built-in 5x7 bitmap font
//! scaled by whole pixels, so it stays crisp and legible.

use image::{Rgb, RgbImage, imageops};

/// Paper of the label sticker: warm off-white.
const PAPER: Rgb<u8> = Rgb([248, 247, 240]);
/// Printed text and bars.
const INK: Rgb<u8> = Rgb([20, 20, 24]);
/// Scanner surround in the macro photo.
const SURROUND: Rgb<u8> = Rgb([38, 38, 42]);
/// Bare glass in the macro photo.
const GLASS: Rgb<u8> = Rgb([226, 230, 232]);
/// Edge of the glass slide, a little darker than its face.
const GLASS_EDGE: Rgb<u8> = Rgb([170, 176, 180]);

/// Renders a slide label: white/paper sticker with the given lines of text (ASCII; other chars drawn as '?') in black,
/// and a 1-D barcode-like pattern encoding `barcode` (any deterministic bar pattern derived from the bytes is fine).
pub fn render_label(width: u32, height: u32, lines: &[&str], barcode: &str) -> RgbImage {
    let mut image = RgbImage::from_pixel(width, height, PAPER);
    let margin = (width.min(height) / 16).max(1);
    let inner = Rect {
        x: margin,
        y: margin,
        w: width.saturating_sub(2 * margin),
        h: height.saturating_sub(2 * margin),
    };
    // The barcode takes the lower part of the label when there is one; text fills the rest.
    let (text_area, code_area) = if barcode.is_empty() {
        (inner, None)
    } else {
        let code_h = inner.h * 2 / 5;
        let text = Rect {
            h: inner.h - code_h,
            ..inner
        };
        let code = Rect {
            y: inner.y + text.h,
            h: code_h,
            ..inner
        };
        (text, Some(code))
    };
    draw_text_block(&mut image, text_area, lines);
    if let Some(area) = code_area {
        draw_barcode(&mut image, area, barcode);
    }
    image
}

/// Renders a macro image: the glass slide photo (dark grey surround, light glass), the label on the left part (rendered with render_label),
/// and `overview` (a low-resolution RGB image of the slide content) scaled into the glass area.
pub fn render_macro(
    width: u32,
    height: u32,
    label_lines: &[&str],
    barcode: &str,
    overview: &RgbImage,
) -> RgbImage {
    let layout = MacroLayout::new(width, height);
    let mut image = RgbImage::from_pixel(width, height, SURROUND);
    fill(&mut image, layout.glass, GLASS_EDGE);
    fill(&mut image, layout.face, GLASS);
    let label = render_label(layout.label.w, layout.label.h, label_lines, barcode);
    imageops::replace(
        &mut image,
        &label,
        i64::from(layout.label.x),
        i64::from(layout.label.y),
    );
    draw_overview(&mut image, layout.content, overview);
    image
}

/// Where the parts of a macro image go.
struct MacroLayout {
    /// The whole glass slide, and its face inside the bevelled edge.
    glass: Rect,
    face: Rect,
    /// The label sticker, on the left of the face.
    label: Rect,
    /// The area right of the label that the tissue overview is fitted into.
    content: Rect,
}

impl MacroLayout {
    fn new(width: u32, height: u32) -> Self {
        let glass = Rect {
            x: 0,
            y: 0,
            w: width,
            h: height,
        }
        .inset(width.min(height) / 12);
        let face = glass.inset((glass.w.min(glass.h) / 60).max(1));
        let gap = (face.h / 20).max(1);
        let label = Rect {
            w: (face.w * 3 / 10).min(face.h),
            ..face.inset(gap)
        };
        let content_x = label.x + label.w + gap;
        let content = Rect {
            x: content_x,
            y: label.y,
            w: (face.x + face.w).saturating_sub(content_x + gap),
            h: label.h,
        };
        Self {
            glass,
            face,
            label,
            content,
        }
    }
}

/// Scales `overview` to fit `area`, centred, and lays it on the glass like a photo: multiplied, with
/// the overview's near-white background counted as clear, so it takes the glass colour.
fn draw_overview(image: &mut RgbImage, area: Rect, overview: &RgbImage) {
    const CLEAR: u32 = 240;
    let (ow, oh) = overview.dimensions();
    if ow == 0 || oh == 0 || area.w == 0 || area.h == 0 {
        return;
    }
    let scale = (f64::from(area.w) / f64::from(ow)).min(f64::from(area.h) / f64::from(oh));
    let w = ((f64::from(ow) * scale) as u32).clamp(1, area.w);
    let h = ((f64::from(oh) * scale) as u32).clamp(1, area.h);
    let scaled = imageops::resize(overview, w, h, imageops::FilterType::Triangle);
    let (x0, y0) = (area.x + (area.w - w) / 2, area.y + (area.h - h) / 2);
    for (x, y, pixel) in scaled.enumerate_pixels() {
        if let Some(target) = image.get_pixel_mut_checked(x0 + x, y0 + y) {
            for (t, &p) in target.0.iter_mut().zip(&pixel.0) {
                let transmitted = (u32::from(p) * 255 / CLEAR).min(255);
                *t = (u32::from(*t) * transmitted / 255) as u8;
            }
        }
    }
}

/// An axis-aligned rectangle in image pixels.
#[derive(Clone, Copy, Debug)]
struct Rect {
    x: u32,
    y: u32,
    w: u32,
    h: u32,
}

impl Rect {
    /// The rectangle shrunk by `by` on every side (empty if too small).
    fn inset(self, by: u32) -> Rect {
        Rect {
            x: self.x.saturating_add(by),
            y: self.y.saturating_add(by),
            w: self.w.saturating_sub(by.saturating_mul(2)),
            h: self.h.saturating_sub(by.saturating_mul(2)),
        }
    }
}

/// Fills `rect` (clipped to the image) with `colour`.
fn fill(image: &mut RgbImage, rect: Rect, colour: Rgb<u8>) {
    let (w, h) = image.dimensions();
    for y in rect.y.min(h)..rect.y.saturating_add(rect.h).min(h) {
        for x in rect.x.min(w)..rect.x.saturating_add(rect.w).min(w) {
            image.put_pixel(x, y, colour);
        }
    }
}

/// Draws `lines` left-aligned in `area`, at the largest whole-pixel scale that fits (at least 1).
fn draw_text_block(image: &mut RgbImage, area: Rect, lines: &[&str]) {
    let columns = lines
        .iter()
        .map(|line| line.chars().count())
        .max()
        .map_or(0, |n| u32::try_from(n).unwrap_or(u32::MAX));
    if columns == 0 {
        return;
    }
    let rows = u32::try_from(lines.len()).unwrap_or(u32::MAX);
    let scale = (area.w / columns.saturating_mul(CELL_W))
        .min(area.h / rows.saturating_mul(CELL_H))
        .max(1);
    // Centre the block vertically: it looks printed rather than pushed to the top.
    let line_h = CELL_H * scale;
    let top = area.y + area.h.saturating_sub(rows.saturating_mul(line_h)) / 2;
    for (row, line) in (0u32..).zip(lines) {
        draw_text(
            image,
            area.x,
            top.saturating_add(row.saturating_mul(line_h)),
            scale,
            line,
        );
    }
}

/// Draws one line of text with its top-left corner at (x, y), each font pixel `scale` pixels wide.
fn draw_text(image: &mut RgbImage, x: u32, y: u32, scale: u32, text: &str) {
    let advance = CELL_W.saturating_mul(scale);
    for (index, ch) in (0u32..).zip(text.chars()) {
        let left = x.saturating_add(index.saturating_mul(advance));
        if left >= image.width() {
            break;
        }
        for (column, bits) in (0u32..).zip(glyph(ch)) {
            for row in (0..GLYPH_H).filter(|row| bits >> row & 1 == 1) {
                let rect = Rect {
                    x: left.saturating_add(column * scale),
                    y: y.saturating_add(row * scale),
                    w: scale,
                    h: scale,
                };
                fill(image, rect, INK);
            }
        }
    }
}

/// Draws bars encoding `text` across `area`, with the text in small print underneath when it fits.
fn draw_barcode(image: &mut RgbImage, area: Rect, text: &str) {
    let modules = barcode_modules(text.as_bytes());
    if modules.is_empty() || area.w == 0 {
        return;
    }
    // Human-readable line under the bars, if it leaves room for the bars above it.
    let text_w = u32::try_from(text.chars().count())
        .unwrap_or(u32::MAX)
        .saturating_mul(CELL_W);
    let caption_scale = (area.h / (4 * CELL_H)).min(area.w / text_w.max(1)).max(1);
    let caption_h = CELL_H * caption_scale;
    let (bars_h, caption) = if area.h >= 3 * caption_h {
        (area.h - caption_h, true)
    } else {
        (area.h, false)
    };
    // Each image column samples the module under its centre, so any width works.
    let count = modules.len() as u64;
    for dx in 0..area.w {
        let module = (u64::from(dx) * 2 + 1) * count / (u64::from(area.w) * 2);
        if modules.get(module as usize).copied().unwrap_or(false) {
            // A gap of one caption pixel separates bars and caption.
            let bar = Rect {
                x: area.x + dx,
                y: area.y,
                w: 1,
                h: bars_h.saturating_sub(caption_scale),
            };
            fill(image, bar, INK);
        }
    }
    if caption {
        let left = area.x + area.w.saturating_sub(text_w.saturating_mul(caption_scale)) / 2;
        draw_text(image, left, area.y + bars_h, caption_scale, text);
    }
}

/// Bar pattern (true = dark module) for `bytes`: quiet zone, a start guard, each byte's bits as
/// wide (1) or narrow (0) bars separated by single spaces, a checksum byte, an end guard.
fn barcode_modules(bytes: &[u8]) -> Vec<bool> {
    let checksum = bytes
        .iter()
        .fold(0u8, |sum, &b| sum.wrapping_mul(31).wrapping_add(b));
    let mut modules = vec![false; 4];
    modules.extend([true, false, true, false]);
    for byte in bytes.iter().copied().chain([checksum]) {
        for bit in (0..8).rev() {
            let wide = byte >> bit & 1 == 1;
            modules.extend(if wide {
                &[true, true, false][..]
            } else {
                &[true, false][..]
            });
        }
    }
    modules.extend([true, false, true, true, false, true]);
    modules.extend([false; 4]);
    modules
}

/// Glyph width and height in font pixels, and the cell each character occupies (with spacing).
const GLYPH_H: u32 = 7;
const CELL_W: u32 = 6;
const CELL_H: u32 = 9;

/// The glyph of `ch`: five columns, bit 0 at the top. Non-printable and non-ASCII draw as '?'.
fn glyph(ch: char) -> [u8; 5] {
    let index = match ch {
        ' '..='~' => ch as usize - ' ' as usize,
        _ => '?' as usize - ' ' as usize,
    };
    FONT.get(index).copied().unwrap_or([0; 5])
}

/// Classic 5x7 font for printable ASCII (0x20..=0x7E), column-major, bit 0 at the top.
const FONT: [[u8; 5]; 95] = [
    [0x00, 0x00, 0x00, 0x00, 0x00], // space
    [0x00, 0x00, 0x5F, 0x00, 0x00], // !
    [0x00, 0x07, 0x00, 0x07, 0x00], // "
    [0x14, 0x7F, 0x14, 0x7F, 0x14], // #
    [0x24, 0x2A, 0x7F, 0x2A, 0x12], // $
    [0x23, 0x13, 0x08, 0x64, 0x62], // %
    [0x36, 0x49, 0x55, 0x22, 0x50], // &
    [0x00, 0x05, 0x03, 0x00, 0x00], // '
    [0x00, 0x1C, 0x22, 0x41, 0x00], // (
    [0x00, 0x41, 0x22, 0x1C, 0x00], // )
    [0x08, 0x2A, 0x1C, 0x2A, 0x08], // *
    [0x08, 0x08, 0x3E, 0x08, 0x08], // +
    [0x00, 0x50, 0x30, 0x00, 0x00], // ,
    [0x08, 0x08, 0x08, 0x08, 0x08], // -
    [0x00, 0x60, 0x60, 0x00, 0x00], // .
    [0x20, 0x10, 0x08, 0x04, 0x02], // /
    [0x3E, 0x51, 0x49, 0x45, 0x3E], // 0
    [0x00, 0x42, 0x7F, 0x40, 0x00], // 1
    [0x42, 0x61, 0x51, 0x49, 0x46], // 2
    [0x21, 0x41, 0x45, 0x4B, 0x31], // 3
    [0x18, 0x14, 0x12, 0x7F, 0x10], // 4
    [0x27, 0x45, 0x45, 0x45, 0x39], // 5
    [0x3C, 0x4A, 0x49, 0x49, 0x30], // 6
    [0x01, 0x71, 0x09, 0x05, 0x03], // 7
    [0x36, 0x49, 0x49, 0x49, 0x36], // 8
    [0x06, 0x49, 0x49, 0x29, 0x1E], // 9
    [0x00, 0x36, 0x36, 0x00, 0x00], // :
    [0x00, 0x56, 0x36, 0x00, 0x00], // ;
    [0x08, 0x14, 0x22, 0x41, 0x00], // <
    [0x14, 0x14, 0x14, 0x14, 0x14], // =
    [0x00, 0x41, 0x22, 0x14, 0x08], // >
    [0x02, 0x01, 0x51, 0x09, 0x06], // ?
    [0x32, 0x49, 0x79, 0x41, 0x3E], // @
    [0x7E, 0x11, 0x11, 0x11, 0x7E], // A
    [0x7F, 0x49, 0x49, 0x49, 0x36], // B
    [0x3E, 0x41, 0x41, 0x41, 0x22], // C
    [0x7F, 0x41, 0x41, 0x22, 0x1C], // D
    [0x7F, 0x49, 0x49, 0x49, 0x41], // E
    [0x7F, 0x09, 0x09, 0x09, 0x01], // F
    [0x3E, 0x41, 0x49, 0x49, 0x7A], // G
    [0x7F, 0x08, 0x08, 0x08, 0x7F], // H
    [0x00, 0x41, 0x7F, 0x41, 0x00], // I
    [0x20, 0x40, 0x41, 0x3F, 0x01], // J
    [0x7F, 0x08, 0x14, 0x22, 0x41], // K
    [0x7F, 0x40, 0x40, 0x40, 0x40], // L
    [0x7F, 0x02, 0x0C, 0x02, 0x7F], // M
    [0x7F, 0x04, 0x08, 0x10, 0x7F], // N
    [0x3E, 0x41, 0x41, 0x41, 0x3E], // O
    [0x7F, 0x09, 0x09, 0x09, 0x06], // P
    [0x3E, 0x41, 0x51, 0x21, 0x5E], // Q
    [0x7F, 0x09, 0x19, 0x29, 0x46], // R
    [0x46, 0x49, 0x49, 0x49, 0x31], // S
    [0x01, 0x01, 0x7F, 0x01, 0x01], // T
    [0x3F, 0x40, 0x40, 0x40, 0x3F], // U
    [0x1F, 0x20, 0x40, 0x20, 0x1F], // V
    [0x3F, 0x40, 0x38, 0x40, 0x3F], // W
    [0x63, 0x14, 0x08, 0x14, 0x63], // X
    [0x07, 0x08, 0x70, 0x08, 0x07], // Y
    [0x61, 0x51, 0x49, 0x45, 0x43], // Z
    [0x00, 0x7F, 0x41, 0x41, 0x00], // [
    [0x02, 0x04, 0x08, 0x10, 0x20], // backslash
    [0x00, 0x41, 0x41, 0x7F, 0x00], // ]
    [0x04, 0x02, 0x01, 0x02, 0x04], // ^
    [0x40, 0x40, 0x40, 0x40, 0x40], // _
    [0x00, 0x01, 0x02, 0x04, 0x00], // `
    [0x20, 0x54, 0x54, 0x54, 0x78], // a
    [0x7F, 0x48, 0x44, 0x44, 0x38], // b
    [0x38, 0x44, 0x44, 0x44, 0x20], // c
    [0x38, 0x44, 0x44, 0x48, 0x7F], // d
    [0x38, 0x54, 0x54, 0x54, 0x18], // e
    [0x08, 0x7E, 0x09, 0x01, 0x02], // f
    [0x0C, 0x52, 0x52, 0x52, 0x3E], // g
    [0x7F, 0x08, 0x04, 0x04, 0x78], // h
    [0x00, 0x44, 0x7D, 0x40, 0x00], // i
    [0x20, 0x40, 0x44, 0x3D, 0x00], // j
    [0x7F, 0x10, 0x28, 0x44, 0x00], // k
    [0x00, 0x41, 0x7F, 0x40, 0x00], // l
    [0x7C, 0x04, 0x18, 0x04, 0x78], // m
    [0x7C, 0x08, 0x04, 0x04, 0x78], // n
    [0x38, 0x44, 0x44, 0x44, 0x38], // o
    [0x7C, 0x14, 0x14, 0x14, 0x08], // p
    [0x08, 0x14, 0x14, 0x18, 0x7C], // q
    [0x7C, 0x08, 0x04, 0x04, 0x08], // r
    [0x48, 0x54, 0x54, 0x54, 0x20], // s
    [0x04, 0x3F, 0x44, 0x40, 0x20], // t
    [0x3C, 0x40, 0x40, 0x20, 0x7C], // u
    [0x1C, 0x20, 0x40, 0x20, 0x1C], // v
    [0x3C, 0x40, 0x30, 0x40, 0x3C], // w
    [0x44, 0x28, 0x10, 0x28, 0x44], // x
    [0x0C, 0x50, 0x50, 0x50, 0x3C], // y
    [0x44, 0x64, 0x54, 0x4C, 0x44], // z
    [0x00, 0x08, 0x36, 0x41, 0x00], // {
    [0x00, 0x00, 0x7F, 0x00, 0x00], // |
    [0x00, 0x41, 0x36, 0x08, 0x00], // }
    [0x02, 0x01, 0x02, 0x04, 0x02], // ~
];

#[cfg(test)]
mod tests {
    use super::*;

    /// Mean RGB over a rectangle.
    fn mean(image: &RgbImage, rect: Rect) -> [f64; 3] {
        let mut sum = [0.0; 3];
        for y in rect.y..rect.y + rect.h {
            for x in rect.x..rect.x + rect.w {
                for (s, &v) in sum.iter_mut().zip(&image.get_pixel(x, y).0) {
                    *s += f64::from(v);
                }
            }
        }
        let n = f64::from(rect.w * rect.h);
        sum.map(|s| s / n)
    }

    fn dark_pixels(image: &RgbImage) -> usize {
        image
            .pixels()
            .filter(|p| p.0.iter().all(|&v| v < 100))
            .count()
    }

    #[test]
    fn label_has_requested_size() {
        for (w, h) in [(400, 300), (37, 91), (1, 1), (0, 0), (0, 10)] {
            let label = render_label(w, h, &["HOSPITAL", "S-2024-001"], "S2024001");
            assert_eq!(label.dimensions(), (w, h));
        }
    }

    #[test]
    fn label_text_is_dark_on_paper() {
        let blank = render_label(400, 300, &[], "");
        let text = render_label(400, 300, &["AB"], "");
        // Blank paper is uniformly light; text adds dark pixels and changes nothing else.
        assert!(blank.pixels().all(|p| *p == PAPER));
        assert!(dark_pixels(&text) > 2000, "{}", dark_pixels(&text));
        for (a, b) in blank.pixels().zip(text.pixels()) {
            assert!(a == b || *b == INK);
        }
        // Two characters at the largest scale span most of the label's width.
        let columns_with_ink = (0..400)
            .filter(|&x| (0..300).any(|y| *text.get_pixel(x, y) == INK))
            .count();
        assert!(columns_with_ink > 250, "{columns_with_ink}");
    }

    #[test]
    fn glyph_pixels_land_where_the_font_puts_them() {
        // 120x100 with margin 6: one character at scale min(108 / 6, 88 / 9) = 9, block top 9.
        let label = render_label(120, 100, &["I"], "");
        let ink_in = |x0: u32, x1: u32, y0: u32, y1: u32| {
            (y0..y1)
                .flat_map(|y| (x0..x1).map(move |x| (x, y)))
                .filter(|&(x, y)| *label.get_pixel(x, y) == INK)
                .count()
        };
        // 'I' is a full-height stem in glyph column 2 with serifs in columns 1 and 3.
        assert_eq!(ink_in(6 + 2 * 9, 6 + 3 * 9, 9, 9 + 7 * 9), 9 * 63);
        assert_eq!(ink_in(6, 6 + 9, 0, 100), 0);
        assert_eq!(ink_in(6 + 9, 6 + 2 * 9, 9, 18), 81);
        assert_eq!(ink_in(6 + 9, 6 + 2 * 9, 18, 9 + 6 * 9), 0);
    }

    #[test]
    fn different_text_gives_different_labels() {
        let a = render_label(300, 200, &["Patient 12345", "Block A1"], "12345");
        let b = render_label(300, 200, &["Patient 12346", "Block A1"], "12345");
        let c = render_label(300, 200, &["Patient 12345", "Block A1"], "12346");
        assert_ne!(a, b);
        assert_ne!(a, c);
        assert_eq!(
            a,
            render_label(300, 200, &["Patient 12345", "Block A1"], "12345")
        );
    }

    #[test]
    fn unknown_characters_draw_as_question_marks() {
        let odd = render_label(200, 100, &["é\u{7}"], "");
        let question = render_label(200, 100, &["??"], "");
        assert_eq!(odd, question);
    }

    #[test]
    fn barcode_depends_on_bytes_and_has_bars() {
        let a = barcode_modules(b"S-1");
        assert_ne!(a, barcode_modules(b"S-2"));
        let label = render_label(400, 200, &[], "S-1");
        assert!(dark_pixels(&label) > 1000);
    }

    #[test]
    fn macro_has_label_overview_and_surround() {
        let overview = RgbImage::from_pixel(200, 100, Rgb([120, 40, 140]));
        let image = render_macro(800, 300, &["LAB 7"], "LAB7", &overview);
        assert_eq!(image.dimensions(), (800, 300));
        let layout = MacroLayout::new(800, 300);

        let surround = mean(
            &image,
            Rect {
                x: 0,
                y: 0,
                w: 800,
                h: 10,
            },
        );
        assert!(surround.iter().all(|&v| v < 60.0), "{surround:?}");
        let glass = mean(
            &image,
            Rect {
                w: 10,
                ..layout.content
            },
        );
        assert!(glass.iter().all(|&v| v > 200.0), "{glass:?}");

        // The label region is the rendered label; the overview keeps its purple (times glass).
        let label = render_label(layout.label.w, layout.label.h, &["LAB 7"], "LAB7");
        let region = imageops::crop_imm(
            &image,
            layout.label.x,
            layout.label.y,
            layout.label.w,
            layout.label.h,
        );
        assert!(region.to_image() == label);
        let c = layout.content;
        let centre = Rect {
            x: c.x + c.w / 2 - 10,
            y: c.y + c.h / 2 - 10,
            w: 20,
            h: 20,
        };
        let purple = mean(&image, centre);
        assert!(
            purple[1] < 60.0 && purple[0] > 90.0 && purple[2] > 110.0,
            "{purple:?}"
        );
    }

    #[test]
    fn macro_tolerates_degenerate_sizes() {
        let overview = RgbImage::new(0, 0);
        for (w, h) in [(0, 0), (1, 1), (5, 300), (300, 5)] {
            assert_eq!(
                render_macro(w, h, &["x"], "x", &overview).dimensions(),
                (w, h)
            );
        }
        let overview = RgbImage::from_pixel(1000, 10, Rgb([0, 0, 0]));
        assert_eq!(
            render_macro(64, 48, &[], "", &overview).dimensions(),
            (64, 48)
        );
    }
}
