//! The dependency tree of the whole graph: each service that nothing depends on, with
//! what it waits on below it (and the condition), every node in its state's colour. A
//! service reached a second time is shown once more by name only.

use std::collections::HashSet;

use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;

use super::super::app::App;
use super::{pane, state_style};

pub fn draw(frame: &mut Frame<'_>, app: &App, area: Rect) {
    let needed: HashSet<&str> = app
        .services
        .iter()
        .flat_map(|s| s.depends_on.iter().map(|d| d.service.as_str()))
        .collect();
    let mut lines = Vec::new();
    let mut shown = HashSet::new();
    for top in app
        .services
        .iter()
        .filter(|s| !needed.contains(s.name.as_str()))
    {
        node(app, &top.name, None, "", true, &mut shown, &mut lines);
    }
    // A cycle has no top: the check refuses them, but show anything left all the same.
    for s in &app.services {
        if !shown.contains(s.name.as_str()) {
            node(app, &s.name, None, "", true, &mut shown, &mut lines);
        }
    }
    let height = area.height.saturating_sub(2) as usize;
    let selected = app.selected.as_deref().unwrap_or("");
    // Start where the selected service first appears, if it would be off screen.
    let at = lines
        .iter()
        .position(|(name, _)| name == selected)
        .unwrap_or(0);
    let skip = at.saturating_sub(height.saturating_sub(1));
    let lines: Vec<Line<'_>> = lines
        .into_iter()
        .skip(skip)
        .take(height)
        .map(|(_, line)| line)
        .collect();
    let block = pane(
        app,
        " dependencies: what waits on what (t: back) ".into(),
        None,
    );
    frame.render_widget(Paragraph::new(lines).block(block), area);
}

fn node(
    app: &App,
    name: &str,
    condition: Option<&str>,
    prefix: &str,
    last: bool,
    shown: &mut HashSet<String>,
    lines: &mut Vec<(String, Line<'static>)>,
) {
    let branch = match (prefix.is_empty() && condition.is_none(), last) {
        (true, _) => "",
        (false, true) => "└─ ",
        (false, false) => "├─ ",
    };
    let service = app.service(name);
    let mut spans = vec![Span::raw(format!("{prefix}{branch}{name} "))];
    if let Some(s) = service {
        spans.push(Span::styled(
            s.state.as_str().to_owned(),
            state_style(app, s.state),
        ));
    }
    if let Some(condition) = condition {
        spans.push(Span::raw(format!("  (waited on until {condition})")));
    }
    let again = !shown.insert(name.to_owned());
    if again {
        spans.push(Span::raw("  (see above)"));
    }
    lines.push((name.to_owned(), Line::from(spans)));
    if again {
        return;
    }
    let Some(s) = service else { return };
    let child_prefix = if prefix.is_empty() && condition.is_none() {
        String::new()
    } else if last {
        format!("{prefix}   ")
    } else {
        format!("{prefix}│  ")
    };
    let count = s.depends_on.len();
    for (i, d) in s.depends_on.iter().enumerate() {
        node(
            app,
            &d.service,
            Some(&d.condition),
            &child_prefix,
            i + 1 == count,
            shown,
            lines,
        );
    }
}
