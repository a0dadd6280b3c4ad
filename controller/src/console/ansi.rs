//! ANSI colours of action logs as HTML (issue 16, pages). Pure: text in,
//! escaped HTML out, no I/O.
//!
//! Logs are stored inert: the controller replaces every control character
//! an agent sends (ESC included) with U+FFFD before it stores or shows a
//! line, so that `sluice logs` never drives a terminal. A colour a tool
//! printed therefore arrives here as `\u{fffd}[31m`. This converter reads
//! that stored form (and a real ESC, the same way) as a Select Graphic
//! Rendition sequence and renders the style as classes, never inline
//! styles (the console's content security policy forbids them): 16
//! foreground and background colours (256-colour and RGB values are
//! mapped to the nearest of those), bold, dim, italic and underline.
//!
//! Only complete CSI sequences of bounded length are read as sequences;
//! other CSI sequences (cursor moves, clearing) are dropped, and anything
//! else (an unterminated or overlong sequence, OSC) stays visible as the
//! text it is, as `sluice logs` shows it. Every character of text is
//! HTML-escaped, and every span opened in a chunk is closed in it, so a
//! chunk's HTML is balanced whatever the input. The style carries from
//! one chunk to the next, as a terminal's does.

use std::fmt::Write as _;

/// The stored form of ESC (see the module's documentation).
const STORED_ESC: char = '\u{fffd}';

/// The longest parameter list read as a sequence; a longer one is text.
const MAX_PARAMS_CHARS: usize = 64;

/// The 16 colours' class names, by SGR index (30-37 and 90-97).
const COLOURS: [&str; 16] = [
    "black",
    "red",
    "green",
    "yellow",
    "blue",
    "magenta",
    "cyan",
    "white",
    "bright-black",
    "bright-red",
    "bright-green",
    "bright-yellow",
    "bright-blue",
    "bright-magenta",
    "bright-cyan",
    "bright-white",
];

/// The current rendition.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Style {
    fg: Option<u8>,
    bg: Option<u8>,
    bold: bool,
    dim: bool,
    italic: bool,
    underline: bool,
}

impl Style {
    fn classes(&self) -> String {
        let mut classes = Vec::new();
        if let Some(fg) = self.fg {
            classes.push(format!("ansi-fg-{}", COLOURS[usize::from(fg)]));
        }
        if let Some(bg) = self.bg {
            classes.push(format!("ansi-bg-{}", COLOURS[usize::from(bg)]));
        }
        for (on, name) in [(self.bold, "ansi-bold"), (self.dim, "ansi-dim"), (self.italic, "ansi-italic")] {
            if on {
                classes.push(name.to_string());
            }
        }
        if self.underline {
            classes.push("ansi-underline".to_string());
        }
        classes.join(" ")
    }

    /// Applies one SGR parameter list (`1;31`, `38;5;208`, empty = reset).
    fn apply(&mut self, params: &str) {
        let mut codes = params.split([';', ':']).map(|p| if p.is_empty() { Some(0) } else { p.parse::<u32>().ok() });
        while let Some(code) = codes.next() {
            let Some(code) = code else { continue };
            match code {
                0 => *self = Style::default(),
                1 => self.bold = true,
                2 => self.dim = true,
                3 => self.italic = true,
                4 => self.underline = true,
                22 => (self.bold, self.dim) = (false, false),
                23 => self.italic = false,
                24 => self.underline = false,
                30..=37 => self.fg = Some((code - 30) as u8),
                39 => self.fg = None,
                40..=47 => self.bg = Some((code - 40) as u8),
                49 => self.bg = None,
                90..=97 => self.fg = Some((code - 90 + 8) as u8),
                100..=107 => self.bg = Some((code - 100 + 8) as u8),
                38 | 48 => {
                    let colour = extended(&mut codes);
                    if code == 38 {
                        self.fg = colour.or(self.fg);
                    } else {
                        self.bg = colour.or(self.bg);
                    }
                }
                // Blink, inverse, hidden, fonts, ...: not rendered.
                _ => {}
            }
        }
    }
}

/// The colour after 38 or 48: `5;N` (256 colours) or `2;R;G;B`, as the
/// nearest of the 16; None when malformed (the codes it used are consumed).
fn extended(codes: &mut impl Iterator<Item = Option<u32>>) -> Option<u8> {
    match codes.next()?? {
        5 => {
            let n = codes.next()??;
            match n {
                0..=15 => Some(n as u8),
                16..=231 => {
                    let n = n - 16;
                    let level = |v: u32| [0, 95, 135, 175, 215, 255][v as usize];
                    Some(nearest(level(n / 36), level(n / 6 % 6), level(n % 6)))
                }
                232..=255 => {
                    let grey = 8 + (n - 232) * 10;
                    Some(nearest(grey, grey, grey))
                }
                _ => None,
            }
        }
        2 => {
            let (r, g, b) = (codes.next()??, codes.next()??, codes.next()??);
            (r < 256 && g < 256 && b < 256).then(|| nearest(r, g, b))
        }
        _ => None,
    }
}

/// The nearest of the 16 colours (xterm's values) to an RGB colour.
fn nearest(r: u32, g: u32, b: u32) -> u8 {
    const RGB: [(u32, u32, u32); 16] = [
        (0, 0, 0),
        (205, 0, 0),
        (0, 205, 0),
        (205, 205, 0),
        (0, 0, 238),
        (205, 0, 205),
        (0, 205, 205),
        (229, 229, 229),
        (127, 127, 127),
        (255, 0, 0),
        (0, 255, 0),
        (255, 255, 0),
        (92, 92, 255),
        (255, 0, 255),
        (0, 255, 255),
        (255, 255, 255),
    ];
    let distance = |(cr, cg, cb): (u32, u32, u32)| {
        let d = |a: u32, b: u32| a.abs_diff(b).pow(2);
        d(r, cr) + d(g, cg) + d(b, cb)
    };
    (0..16u8).min_by_key(|&i| distance(RGB[usize::from(i)])).unwrap_or(7)
}

/// Converts chunks of a log (stored lines, in order) to HTML, carrying
/// the style from one to the next.
#[derive(Debug, Clone, Default)]
pub struct AnsiHtml {
    style: Style,
}

impl AnsiHtml {
    pub fn new() -> Self {
        Self::default()
    }

    /// One chunk as balanced HTML: escaped text, styled runs in `<span
    /// class="ansi-...">` (opened only around text, never empty).
    pub fn chunk(&mut self, text: &str) -> String {
        let mut out = String::with_capacity(text.len() + 16);
        let mut open = false;
        let mut rest = text;
        while let Some(c) = rest.chars().next() {
            if matches!(c, '\u{1b}' | STORED_ESC)
                && let Some((params, end, consumed)) = csi(&rest[c.len_utf8()..])
            {
                if end == 'm' {
                    let before = self.style;
                    self.style.apply(params);
                    if self.style != before && open {
                        out.push_str("</span>");
                        open = false;
                    }
                }
                rest = &rest[c.len_utf8() + consumed..];
                continue;
            }
            if !open {
                open = self.open(&mut out);
            }
            escape(c, &mut out);
            rest = &rest[c.len_utf8()..];
        }
        if open {
            out.push_str("</span>");
        }
        out
    }

    /// Opens a span for the current style, if it has any.
    fn open(&self, out: &mut String) -> bool {
        let classes = self.style.classes();
        if classes.is_empty() {
            return false;
        }
        let _ = write!(out, "<span class=\"{classes}\">");
        true
    }
}

/// A CSI sequence at the start of `text` (after its ESC): `[`, parameter
/// characters (digits, `;`, `:`, `?`, `<`, `=`, `>`), a final character
/// terminals use (SGR `m`, cursor moves, erasing, modes). Returns the
/// parameters, the final character and the bytes it took. Anything else
/// (`[INFO]` after a tool's own replacement character) is not one.
fn csi(text: &str) -> Option<(&str, char, usize)> {
    const FINALS: &str = "mABCDEFGHJKSTfhlnsudrXPLM@";
    let body = text.strip_prefix('[')?;
    for (i, c) in body.char_indices() {
        if i > MAX_PARAMS_CHARS {
            return None;
        }
        match c {
            '0'..='9' | ';' | ':' | '<' | '=' | '>' | '?' => continue,
            c if FINALS.contains(c) => return Some((&body[..i], c, 1 + i + 1)),
            _ => return None,
        }
    }
    None
}

fn escape(c: char, out: &mut String) {
    match c {
        '&' => out.push_str("&amp;"),
        '<' => out.push_str("&lt;"),
        '>' => out.push_str("&gt;"),
        '"' => out.push_str("&quot;"),
        '\'' => out.push_str("&#39;"),
        c => out.push(c),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(text: &str) -> String {
        AnsiHtml::new().chunk(text)
    }

    #[test]
    fn colours_become_classes_in_their_stored_and_raw_forms() {
        assert_eq!(one("plain\n"), "plain\n");
        let stored = one("\u{fffd}[31merror\u{fffd}[0m: bad\n");
        assert_eq!(stored, "<span class=\"ansi-fg-red\">error</span>: bad\n");
        assert_eq!(one("\u{1b}[31merror\u{1b}[0m: bad\n"), stored);
        assert_eq!(
            one("\u{1b}[1;92mok\u{1b}[22m done\u{1b}[m"),
            "<span class=\"ansi-fg-bright-green ansi-bold\">ok</span><span class=\"ansi-fg-bright-green\"> done</span>"
        );
        assert_eq!(one("\u{1b}[44;4mx"), "<span class=\"ansi-bg-blue ansi-underline\">x</span>");
        // 256 colours and RGB: the nearest of the 16.
        assert_eq!(one("\u{1b}[38;5;196mx"), "<span class=\"ansi-fg-bright-red\">x</span>");
        assert_eq!(one("\u{1b}[38;2;0;0;0;48;5;2mx"), "<span class=\"ansi-fg-black ansi-bg-green\">x</span>");
        assert_eq!(one("\u{1b}[38;5;244mx"), "<span class=\"ansi-fg-bright-black\">x</span>");
    }

    #[test]
    fn the_style_carries_across_chunks_and_each_chunk_is_balanced() {
        let mut c = AnsiHtml::new();
        assert_eq!(c.chunk("\u{fffd}[33mwarn\n"), "<span class=\"ansi-fg-yellow\">warn\n</span>");
        assert_eq!(c.chunk("still\n"), "<span class=\"ansi-fg-yellow\">still\n</span>");
        assert_eq!(c.chunk("\u{fffd}[0mplain\n"), "plain\n");
    }

    #[test]
    fn other_sequences_are_dropped_and_broken_ones_stay_text() {
        // Cursor moves and clearing: nothing to show.
        assert_eq!(one("a\u{1b}[2Jb\u{fffd}[10;20Hc\u{1b}[?25l"), "abc");
        // Unterminated, not CSI, or an overlong parameter list: text, as the CLI shows it.
        assert_eq!(one("x\u{fffd}[31"), "x\u{fffd}[31");
        assert_eq!(one("\u{fffd}]0;title\u{fffd}"), "\u{fffd}]0;title\u{fffd}");
        assert_eq!(one("\u{fffd}"), "\u{fffd}");
        let long = format!("\u{1b}[{}m!", "1;".repeat(40));
        assert_eq!(one(&long), long);
        // A replacement character of a tool's own stays, and so does what follows it.
        assert_eq!(one("bad byte: \u{fffd} ok"), "bad byte: \u{fffd} ok");
        assert_eq!(one("\u{fffd}[INFO] \u{fffd}[ 1m"), "\u{fffd}[INFO] \u{fffd}[ 1m");
    }

    #[test]
    fn hostile_input_is_escaped_and_never_breaks_out() {
        let html = one("<script>alert('x')</script> & \"q\"");
        assert_eq!(html, "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;q&quot;");
        // A sequence cannot smuggle markup into a class attribute.
        let html = one("\u{1b}[31;\"><img src=x>m after");
        assert_eq!(html, "\u{1b}[31;&quot;&gt;&lt;img src=x&gt;m after");
        // Numbers out of range, malformed extended colours, empty parameters.
        for text in [
            "\u{1b}[99999999999999999999mx",
            "\u{1b}[38;5;300mx",
            "\u{1b}[38;2;1mx",
            "\u{1b}[38mx",
            "\u{1b}[48;9mx",
            "\u{1b}[;;;mx",
            "\u{1b}[38;2;999;0;0mx",
        ] {
            let html = one(text);
            assert!(html.ends_with('x') || html.ends_with("x</span>"), "{text:?}: {html}");
            assert_eq!(html.matches("<span").count(), html.matches("</span>").count(), "{text:?}: {html}");
        }
        // Thousands of changes: balanced, linear.
        let many = "\u{1b}[31ma\u{1b}[32mb".repeat(5000);
        let html = one(&many);
        assert_eq!(html.matches("<span").count(), 10_000);
        assert_eq!(html.matches("</span>").count(), 10_000);
        // Multi-byte text around sequences.
        assert_eq!(one("é\u{1b}[1m😀"), "é<span class=\"ansi-bold\">😀</span>");
    }

    #[test]
    fn masked_secrets_stay_masked() {
        // The stored line is what `sluice logs` prints; the converter adds
        // no text and removes only complete sequences.
        let html = one("token=\u{fffd}[01;31m***\u{fffd}[0m\n");
        assert_eq!(html, "token=<span class=\"ansi-fg-red ansi-bold\">***</span>\n");
    }
}
