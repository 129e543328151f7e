//! What is drawn over the panes: the help with every key, a confirmation, a prompt for
//! a value, or a long report (a refused reload's diagnostics).

use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::style::{Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Clear, Paragraph, Wrap};

use super::super::app::{App, Overlay, PromptFor};
use super::super::text::escaped;

/// Every key, as the help shows it (and the README documents it).
pub const KEYS: &[(&str, &str)] = &[
    ("↑ ↓ j k", "select a service (or scroll the focused pane)"),
    ("PgUp PgDn g G", "page up and down, first and last"),
    ("Tab", "move between the table, the log and the feed"),
    ("Enter d", "detail of the selected service (Esc: back)"),
    ("t", "dependency tree of the whole graph"),
    ("/", "filter the table (in the log pane: search)"),
    ("s S", "sort by the next column, reverse the order"),
    ("n N", "next and previous match of the log search"),
    ("p", "pause or resume the log"),
    ("w", "wrap long log lines"),
    ("u", "start the selected service"),
    ("x", "stop it (confirmed)"),
    ("r", "restart it (confirmed)"),
    ("e", "ensure it is healthy, with its dependencies"),
    ("K", "send it a signal (asks which; confirmed)"),
    ("=", "scale it to a number of replicas (confirmed)"),
    (
        "R",
        "reload the config (confirmed; shows the diagnostics if refused)",
    ),
    ("?", "this help"),
    ("q Ctrl-C", "quit"),
];

pub fn draw(frame: &mut Frame<'_>, app: &App, area: Rect) {
    let Some(overlay) = &app.overlay else { return };
    let bold = Style::default().add_modifier(Modifier::BOLD);
    match overlay {
        Overlay::Help => {
            let mut lines: Vec<Line<'_>> = KEYS
                .iter()
                .map(|(keys, what)| {
                    Line::from(vec![
                        Span::styled(format!("{keys:>14}  "), bold),
                        Span::raw(*what),
                    ])
                })
                .collect();
            lines.push(Line::raw(""));
            if let Some(why) = &app.read_only {
                lines.push(Line::raw(format!("Actions are disabled: {why}")));
            }
            lines.push(Line::raw("Any key closes this help."));
            show(frame, area, " keys ", lines, 74);
        }
        Overlay::Confirm(action) => {
            let lines = vec![
                Line::styled(format!("{}?", action.describe()), bold),
                Line::raw(""),
                Line::raw("y: yes    any other key: no"),
            ];
            show(frame, area, " confirm ", lines, 50);
        }
        Overlay::Prompt { action, input } => {
            let question = match action {
                PromptFor::Signal => "Signal to send (HUP, TERM, USR1, 9...):",
                PromptFor::Scale => "Number of replicas:",
            };
            let lines = vec![
                Line::styled(question, bold),
                Line::raw(format!("> {input}█")),
                Line::raw(""),
                Line::raw("Enter: go on    Esc: cancel"),
            ];
            show(frame, area, " ask ", lines, 50);
        }
        Overlay::Report { title, text } => {
            let mut lines: Vec<Line<'_>> =
                text.lines().map(|line| Line::raw(escaped(line))).collect();
            lines.push(Line::raw(""));
            lines.push(Line::raw("Any key closes this."));
            show(frame, area, &format!(" {} ", escaped(title)), lines, 100);
        }
    }
}

/// A box of `lines`, centred, at most `width` wide.
fn show(frame: &mut Frame<'_>, area: Rect, title: &str, lines: Vec<Line<'_>>, width: u16) {
    let width = width.min(area.width.saturating_sub(2));
    let height = (lines.len() as u16 + 2).min(area.height.saturating_sub(2));
    let x = area.x + (area.width - width) / 2;
    let y = area.y + (area.height - height) / 2;
    let rect = Rect::new(x, y, width, height);
    frame.render_widget(Clear, rect);
    frame.render_widget(
        Paragraph::new(lines)
            .wrap(Wrap { trim: false })
            .block(Block::bordered().title(title.to_owned())),
        rect,
    );
}
