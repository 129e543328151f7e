//! Bearer tokens for the optional TCP listener. The unix socket needs none (its mode is
//! the access control); over TCP every request must carry `Authorization: Bearer
//! <token>`. The control token may do anything; the read token only `GET`.

use std::path::Path;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::{ApiError, ErrorKind};

/// The tokens read from their files at start.
#[derive(Debug, Clone)]
pub struct Tokens {
    control: Option<Vec<u8>>,
    read: Option<Vec<u8>>,
}

impl Tokens {
    /// Reads the token files (surrounding whitespace is not part of a token).
    pub fn load(control: Option<&Path>, read: Option<&Path>) -> Result<Self, String> {
        let load = |path: Option<&Path>| -> Result<Option<Vec<u8>>, String> {
            let Some(path) = path else { return Ok(None) };
            let text = std::fs::read_to_string(path).map_err(|error| {
                format!("cannot read the token file {}: {error}", path.display())
            })?;
            let token = text.trim();
            if token.is_empty() {
                return Err(format!("the token file {} is empty", path.display()));
            }
            Ok(Some(token.as_bytes().to_vec()))
        };
        Ok(Self {
            control: load(control)?,
            read: load(read)?,
        })
    }
}

/// Compares in time that depends only on the lengths, not on where bytes differ.
fn same(a: &[u8], b: &[u8]) -> bool {
    let mut difference = a.len() ^ b.len();
    for i in 0..a.len().max(b.len()) {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0);
        difference |= usize::from(x ^ y);
    }
    difference == 0
}

/// The middleware: 401 without a valid token, 403 for a read token that tries to act.
pub async fn authorize(
    State(tokens): State<Arc<Tokens>>,
    request: Request,
    next: Next,
) -> Response {
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .map(str::as_bytes);
    let Some(presented) = presented else {
        return ApiError::new(
            StatusCode::UNAUTHORIZED,
            ErrorKind::Unauthorized,
            "send Authorization: Bearer <token>",
        )
        .into_response();
    };
    let control = tokens
        .control
        .as_deref()
        .is_some_and(|t| same(t, presented));
    let read = tokens.read.as_deref().is_some_and(|t| same(t, presented));
    if !control && !read {
        return ApiError::new(
            StatusCode::UNAUTHORIZED,
            ErrorKind::Unauthorized,
            "the token is not valid",
        )
        .into_response();
    }
    if !control && request.method() != Method::GET {
        return ApiError::new(
            StatusCode::FORBIDDEN,
            ErrorKind::Forbidden,
            "the read token may only read; use the control token",
        )
        .into_response();
    }
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::same;

    #[test]
    fn tokens_compare_exactly() {
        assert!(same(b"secret", b"secret"));
        assert!(!same(b"secret", b"secreT"));
        assert!(!same(b"secret", b"secret2"));
        assert!(!same(b"", b"x"));
    }
}
