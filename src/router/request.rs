//! Which model a request asks for: the `model` field of a JSON body, of a
//! `multipart/form-data` body (audio transcriptions, image edits), or of the query
//! string, in that order of precedence from the query down.

/// Why no model could be read from a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NoModel {
    /// The body says it is JSON (or has no type and is not a form) but does not parse.
    NotJson(String),
    /// A form whose boundary is missing or whose parts do not parse.
    BadForm(String),
    /// Nothing names a model.
    Missing,
}

impl NoModel {
    pub fn message(&self) -> String {
        match self {
            NoModel::NotJson(error) => format!("the request body is not valid JSON: {error}"),
            NoModel::BadForm(error) => format!("the multipart form cannot be read: {error}"),
            NoModel::Missing => "the request names no model: send a `model` field in the JSON \
                                 body (or the form, or the query string)"
                .to_owned(),
        }
    }
}

/// The model a request names.
pub fn model_of(
    query: Option<&str>,
    content_type: Option<&str>,
    body: &[u8],
) -> Result<String, NoModel> {
    if let Some(model) = query.and_then(|q| query_value(q, "model")) {
        return Ok(model);
    }
    let media = content_type
        .and_then(|c| c.split(';').next())
        .map(|m| m.trim().to_ascii_lowercase());
    match media.as_deref() {
        Some("multipart/form-data") => {
            let boundary = content_type
                .and_then(|c| parameter(c, "boundary"))
                .ok_or_else(|| NoModel::BadForm("no boundary in its Content-Type".to_owned()))?;
            form_field(body, &boundary, "model")?.ok_or(NoModel::Missing)
        }
        // `curl -d '{...}'` says it sends a form; a body that opens with `{` is JSON.
        Some("application/x-www-form-urlencoded") if !starts_like_json(body) => {
            std::str::from_utf8(body)
                .ok()
                .and_then(|text| query_value(text, "model"))
                .ok_or(NoModel::Missing)
        }
        _ if body.iter().all(u8::is_ascii_whitespace) => Err(NoModel::Missing),
        _ => {
            // Only `model` is read; the rest (a long conversation, a base64 image) is
            // checked to be JSON and skipped, never built into values.
            #[derive(serde::Deserialize)]
            struct Named<'a> {
                #[serde(borrow, default)]
                model: Option<ModelField<'a>>,
            }
            #[derive(serde::Deserialize)]
            #[serde(untagged)]
            enum ModelField<'a> {
                #[serde(borrow)]
                Text(std::borrow::Cow<'a, str>),
                Other(serde::de::IgnoredAny),
            }
            let named: Named<'_> =
                serde_json::from_slice(body).map_err(|e| NoModel::NotJson(e.to_string()))?;
            match named.model {
                Some(ModelField::Text(model)) => Ok(model.into_owned()),
                _ => Err(NoModel::Missing),
            }
        }
    }
}

fn starts_like_json(body: &[u8]) -> bool {
    body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{')
}

/// A parameter of a header value: `boundary` of `multipart/form-data; boundary=xyz`.
fn parameter(header: &str, name: &str) -> Option<String> {
    header.split(';').skip(1).find_map(|part| {
        let (key, value) = part.split_once('=')?;
        key.trim()
            .eq_ignore_ascii_case(name)
            .then(|| value.trim().trim_matches('"').to_owned())
    })
}

/// The first value of `name` in a query string, percent-decoded.
fn query_value(query: &str, name: &str) -> Option<String> {
    query.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        (decode(key) == name)
            .then(|| decode(value))
            .filter(|v| !v.is_empty())
    })
}

/// `%XX` and `+` decoding, as forms and query strings encode.
fn decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                match std::str::from_utf8(&bytes[i + 1..i + 3])
                    .ok()
                    .and_then(|hex| u8::from_str_radix(hex, 16).ok())
                {
                    Some(byte) => {
                        out.push(byte);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            byte => out.push(byte),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The text of the form field `name`, if the form has one.
fn form_field(body: &[u8], boundary: &str, name: &str) -> Result<Option<String>, NoModel> {
    let delimiter = format!("--{boundary}");
    let delimiter = delimiter.as_bytes();
    let mut rest = match find(body, delimiter) {
        Some(at) => &body[at + delimiter.len()..],
        None => return Err(NoModel::BadForm("the boundary never appears".to_owned())),
    };
    loop {
        // After a delimiter: `--` ends the form, otherwise a line break and a part.
        if rest.starts_with(b"--") {
            return Ok(None);
        }
        let Some(headers_end) = find(rest, b"\r\n\r\n") else {
            return Err(NoModel::BadForm("a part has no end of headers".to_owned()));
        };
        let headers = String::from_utf8_lossy(&rest[..headers_end]);
        let content = &rest[headers_end + 4..];
        let Some(end) = find(content, delimiter) else {
            return Err(NoModel::BadForm("a part never ends".to_owned()));
        };
        let value = content[..end]
            .strip_suffix(b"\r\n")
            .unwrap_or(&content[..end]);
        let named = headers.lines().any(|line| {
            let Some((key, value)) = line.split_once(':') else {
                return false;
            };
            key.trim().eq_ignore_ascii_case("content-disposition")
                && parameter(value, "name").as_deref() == Some(name)
        });
        if named {
            return Ok(Some(String::from_utf8_lossy(value).trim().to_owned()));
        }
        rest = &content[end + delimiter.len()..];
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || haystack.len() < needle.len() {
        return None;
    }
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_model_comes_from_json_a_form_or_the_query() {
        let json = br#"{"model": "llama3", "messages": []}"#;
        assert_eq!(
            model_of(None, Some("application/json"), json).unwrap(),
            "llama3"
        );
        // Clients that send no type still send JSON.
        assert_eq!(model_of(None, None, json).unwrap(), "llama3");
        let form = b"--XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.wav\"\r\nContent-Type: audio/wav\r\n\r\nRIFF....\r\n--XyZ\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nwhisper-1\r\n--XyZ--\r\n";
        assert_eq!(
            model_of(None, Some("multipart/form-data; boundary=XyZ"), form).unwrap(),
            "whisper-1"
        );
        assert_eq!(
            model_of(Some("a=1&model=tts%2D1+hd"), None, b"").unwrap(),
            "tts-1 hd"
        );
        assert_eq!(
            model_of(
                None,
                Some("application/x-www-form-urlencoded"),
                b"x=1&model=m"
            )
            .unwrap(),
            "m"
        );
        // What `curl -d` sends: JSON labelled as a form.
        assert_eq!(
            model_of(None, Some("application/x-www-form-urlencoded"), json).unwrap(),
            "llama3"
        );
    }

    #[test]
    fn a_request_without_a_model_says_why() {
        assert_eq!(model_of(None, None, b""), Err(NoModel::Missing));
        assert_eq!(
            model_of(None, Some("application/json"), br#"{"messages": []}"#),
            Err(NoModel::Missing)
        );
        assert!(matches!(
            model_of(None, Some("application/json"), b"{not json"),
            Err(NoModel::NotJson(_))
        ));
        assert!(matches!(
            model_of(None, Some("multipart/form-data"), b"--a\r\n"),
            Err(NoModel::BadForm(_))
        ));
        assert!(matches!(
            model_of(
                None,
                Some("multipart/form-data; boundary=a"),
                b"--a\r\nbroken"
            ),
            Err(NoModel::BadForm(_))
        ));
        // A model that is not a string is no model.
        assert_eq!(
            model_of(None, None, br#"{"model": 3}"#),
            Err(NoModel::Missing)
        );
        // Truncated escapes are kept as written.
        assert_eq!(model_of(Some("model=a%2"), None, b"").unwrap(), "a%2");
    }
}
