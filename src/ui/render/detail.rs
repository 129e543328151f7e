//! The detail view of the selected service: its state and why, its process, probes,
//! ports, proxy and model routing figures, what it depends on and what depends on it
//! (with their states), and its last runs as the events told them.

use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::style::{Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Paragraph, Wrap};

use super::super::app::App;
use super::super::text::{bytes, duration, escaped};
use super::{pane, state_style};

pub fn draw(frame: &mut Frame<'_>, app: &App, area: Rect) {
    let Some(s) = app.selected_service() else {
        let block = pane(app, " detail ".into(), None);
        frame.render_widget(Paragraph::new("no service selected").block(block), area);
        return;
    };
    let bold = Style::default().add_modifier(Modifier::BOLD);
    let field = |name: &str, value: String| {
        Line::from(vec![
            Span::styled(format!("{name:>12}: "), bold),
            Span::raw(value),
        ])
    };
    let mut lines = vec![Line::from(vec![
        Span::styled(format!("{:>12}: ", "state"), bold),
        Span::styled(s.state.as_str(), state_style(app, s.state)),
        Span::raw(format!(" · {}", escaped(&s.reason))),
    ])];
    if let Some(description) = &s.description {
        lines.push(field("description", escaped(description)));
    }
    if let Some(by) = &s.blocked_by {
        lines.push(field("blocked by", by.clone()));
    }
    let mut process = format!(
        "pid {} · run {} · since {} · restarts {}",
        s.pid.map_or("-".into(), |p| p.to_string()),
        s.run_id,
        s.since,
        s.restarts
    );
    if let Some(up) = s.uptime_seconds {
        process.push_str(&format!(" · up {}", duration(up)));
    }
    if let Some(main) = s.main_pid {
        process.push_str(&format!(" · main pid {main}"));
    }
    lines.push(field("process", process));
    if let Some(r) = &s.resources {
        lines.push(field(
            "uses",
            format!(
                "{:.1}% CPU · {} RSS{} · {} processes",
                r.cpu_percent,
                bytes(r.memory_rss_bytes),
                r.memory_pss_bytes
                    .map(|p| format!(" ({} PSS)", bytes(p)))
                    .unwrap_or_default(),
                r.processes
            ),
        ));
    }
    if let Some(exit) = &s.last_exit {
        lines.push(field("last exit", escaped(exit)));
    }
    if s.notify_status.is_some() || s.notify_state.is_some() {
        lines.push(field(
            "notify",
            format!(
                "{} {}",
                s.notify_state.as_deref().map(escaped).unwrap_or_default(),
                s.notify_status.as_deref().map(escaped).unwrap_or_default()
            ),
        ));
    }
    match &s.last_probe {
        Some(p) => lines.push(field(
            "last probe",
            format!(
                "{} {} at {}: {} ({} failures so far)",
                p.kind,
                if p.ok { "passed" } else { "FAILED" },
                super::super::text::clock(&p.time),
                escaped(&p.message),
                s.probe_failures
            ),
        )),
        None => lines.push(field("probes", "none run".into())),
    }
    let mut ports = s.ports.join(", ");
    if let Some(port) = s.port {
        ports.push_str(&format!(" (assigned port {port})"));
    }
    if !ports.is_empty() {
        lines.push(field("ports", ports));
    }
    if let Some(p) = &s.proxy {
        lines.push(field(
            "proxy",
            format!(
                "{} → {} · {} open, {} waiting, {} served, {} refused · {} in, {} out",
                p.listen,
                p.upstream,
                p.open_connections,
                p.waiting,
                p.served,
                p.refused,
                bytes(p.bytes_in),
                bytes(p.bytes_out)
            ),
        ));
    }
    if let Some(m) = &s.models {
        lines.push(field(
            "models",
            format!(
                "{} → {} · {} requests ({} failed), {} in flight, {} queued, {} loads, {} evictions",
                m.names.join(", "),
                m.upstream,
                m.requests,
                m.failed,
                m.in_flight,
                m.queued,
                m.loads,
                m.evictions
            ),
        ));
    }
    let dependency = |name: &str, condition: &str| -> Vec<Span<'static>> {
        let state = app.service(name).map(|d| d.state);
        vec![
            Span::raw(format!("{name} ({condition}) ")),
            match state {
                Some(phase) => Span::styled(phase.as_str(), state_style(app, phase)),
                None => Span::raw("unknown"),
            },
            Span::raw("  "),
        ]
    };
    let mut needs = vec![Span::styled(format!("{:>12}: ", "depends on"), bold)];
    if s.depends_on.is_empty() {
        needs.push(Span::raw("nothing"));
    }
    for d in &s.depends_on {
        needs.extend(dependency(&d.service, &d.condition));
    }
    lines.push(Line::from(needs));
    let mut dependents = vec![Span::styled(format!("{:>12}: ", "needed by"), bold)];
    let by = app.dependents(&s.name);
    if by.is_empty() {
        dependents.push(Span::raw("nothing"));
    }
    for (d, condition) in by {
        dependents.extend(dependency(&d.name, condition));
    }
    lines.push(Line::from(dependents));
    lines.push(Line::styled(format!("{:>12}:", "runs"), bold));
    match app.runs.get(&s.name) {
        Some(runs) if !runs.is_empty() => {
            for run in runs.iter().rev() {
                lines.push(Line::raw(format!(
                    "{:>14}run {} {} → {}",
                    "",
                    run.run_id,
                    super::super::text::clock(&run.started),
                    match (&run.ended, &run.how) {
                        (Some(at), Some(how)) =>
                            format!("{} {}", super::super::text::clock(at), escaped(how)),
                        _ => "running".to_owned(),
                    }
                )));
            }
        }
        _ => lines.push(Line::raw(format!("{:>14}none in the kept events", ""))),
    }
    let block = pane(app, format!(" {} (Esc: back) ", s.name), None);
    frame.render_widget(
        Paragraph::new(lines)
            .wrap(Wrap { trim: false })
            .block(block),
        area,
    );
}
