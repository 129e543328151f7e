//! What the dashboard can ask of the supervisor, each through its API route: start,
//! stop, restart, ensure, signal and scale the selected service, and reload the config.
//! Those that stop something are confirmed first; each one's outcome (the API's answer,
//! or its error with the cause chain) goes to the feed.

use std::time::Duration;

use hyper::Method;

use crate::api::client::{self, Endpoint, Patience};
use crate::api::model::{ErrorBody, Reloaded, ServiceView, Signaled};

use super::update::Update;

/// How long a start, restart or ensure waits for the outcome before the feed says it
/// is still not known.
const OUTCOME_WAIT: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Start(String),
    Stop(String),
    Restart(String),
    Ensure(String),
    Signal(String, String),
    Scale(String, u32),
    ReloadConfig,
}

impl Action {
    /// Whether it stops something (or may), and so is confirmed first.
    pub fn needs_confirmation(&self) -> bool {
        !matches!(self, Action::Start(_) | Action::Ensure(_))
    }

    /// What it does, in words: the confirmation's question and the feed's subject.
    pub fn describe(&self) -> String {
        match self {
            Action::Start(name) => format!("start {name}"),
            Action::Stop(name) => format!("stop {name}"),
            Action::Restart(name) => format!("restart {name}"),
            Action::Ensure(name) => format!("ensure {name}"),
            Action::Signal(name, signal) => format!("send {signal} to {name}"),
            Action::Scale(name, replicas) => format!("scale {name} to {replicas}"),
            Action::ReloadConfig => "reload the config".to_owned(),
        }
    }

    /// The request: method, path and query.
    fn request(&self) -> (Method, String, Patience) {
        let waiting = Patience::waiting(client::DEFAULT_PATIENCE, OUTCOME_WAIT);
        let seconds = OUTCOME_WAIT.as_secs();
        match self {
            Action::Start(name) => (
                Method::POST,
                format!("/v1/services/{name}/start?wait=true&timeout={seconds}s"),
                waiting,
            ),
            Action::Stop(name) => (Method::POST, format!("/v1/services/{name}/stop"), waiting),
            Action::Restart(name) => (
                Method::POST,
                format!("/v1/services/{name}/restart?wait=true&timeout={seconds}s"),
                waiting,
            ),
            Action::Ensure(name) => (
                Method::POST,
                format!("/v1/services/{name}/ensure?timeout={seconds}s"),
                waiting,
            ),
            Action::Signal(name, signal) => (
                Method::POST,
                format!("/v1/services/{name}/signal?signal={}", query_value(signal)),
                Patience::default(),
            ),
            Action::Scale(name, replicas) => (
                Method::POST,
                format!("/v1/services/{name}/scale?replicas={replicas}"),
                waiting,
            ),
            Action::ReloadConfig => (Method::POST, "/v1/reload".to_owned(), waiting),
        }
    }

    /// Carries it out and says what came of it.
    pub async fn run(self, endpoint: Endpoint) -> Update {
        let (method, path, patience) = self.request();
        let what = self.describe();
        let answer = match client::request_at(&endpoint, method, &path, patience).await {
            Ok(answer) => answer,
            Err(error) => return failed(format!("{what}: {error}"), None),
        };
        if !answer.status.is_success() {
            return match answer.parse::<ErrorBody>() {
                Ok(body) => {
                    let mut text = format!("{what}: {}", body.error.message);
                    for cause in body.error.cause.iter().skip(1) {
                        text.push_str(&format!("; {cause}"));
                    }
                    failed(text, body.error.report)
                }
                Err(unreadable) => failed(format!("{what}: {unreadable}"), None),
            };
        }
        let text = match &self {
            Action::Signal(..) => match answer.parse::<Signaled>() {
                Ok(sent) => format!(
                    "{what}: sent {} to {} {}",
                    sent.signal,
                    target(&sent),
                    sent.pid
                ),
                Err(error) => format!("{what}: done ({error})"),
            },
            Action::ReloadConfig => match answer.parse::<Reloaded>() {
                Ok(reloaded) => {
                    let r = reloaded.reloaded;
                    format!(
                        "{what}: {} restarted, {} added, {} removed, {} unchanged",
                        r.restarted.len(),
                        r.added.len(),
                        r.removed.len(),
                        r.unchanged.len()
                    )
                }
                Err(error) => format!("{what}: done ({error})"),
            },
            Action::Scale(..) => format!("{what}: done"),
            _ => match answer.parse::<ServiceView>() {
                Ok(view) => {
                    let pid = view.pid.map(|p| format!(" (pid {p})")).unwrap_or_default();
                    format!("{what}: {}{pid}", view.state)
                }
                Err(error) => format!("{what}: done ({error})"),
            },
        };
        Update::Outcome {
            ok: true,
            text,
            report: None,
        }
    }
}

fn failed(text: String, report: Option<String>) -> Update {
    Update::Outcome {
        ok: false,
        text,
        report,
    }
}

fn target(sent: &Signaled) -> &'static str {
    match sent.target {
        crate::supervisor::Target::Main => "main process",
        crate::supervisor::Target::Group => "process group",
    }
}

/// A typed value made safe for a query string: letters, digits, `-` and `+` are kept,
/// anything else is percent-encoded (the API then says what is wrong with it).
fn query_value(text: &str) -> String {
    let mut out = String::new();
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'+' {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_stops_something_is_confirmed() {
        assert!(!Action::Start("a".into()).needs_confirmation());
        assert!(!Action::Ensure("a".into()).needs_confirmation());
        assert!(Action::Stop("a".into()).needs_confirmation());
        assert!(Action::Restart("a".into()).needs_confirmation());
        assert!(Action::Signal("a".into(), "TERM".into()).needs_confirmation());
        assert!(Action::Scale("a".into(), 0).needs_confirmation());
        assert!(Action::ReloadConfig.needs_confirmation());
    }

    #[test]
    fn scale_and_signal_use_query_parameters() {
        let (_, path, _) = Action::Scale("web".into(), 3).request();
        assert_eq!(path, "/v1/services/web/scale?replicas=3");
        let (_, path, _) = Action::Signal("web".into(), "HUP&x=1".into()).request();
        assert_eq!(path, "/v1/services/web/signal?signal=HUP%26x%3D1");
    }
}
