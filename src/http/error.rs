//! Why a message was refused, the status it maps to, and canned error responses.

use std::fmt;

/// A message that cannot be forwarded. Reasons are static so errors never allocate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpError {
    /// Malformed or ambiguous request (or request body): 400.
    BadRequest(&'static str),
    /// Request line longer than [`super::MAX_REQUEST_LINE`]: 414.
    UriTooLong,
    /// Request head over [`super::MAX_HEAD`] or more than [`super::MAX_HEADERS`] fields: 431.
    HeadersTooLarge,
    /// Request version other than HTTP/1.0 or HTTP/1.1: 505.
    VersionNotSupported,
    /// Valid HTTP we chose not to support (CONNECT, transfer codings other than chunked): 501.
    NotImplemented(&'static str),
    /// Malformed, ambiguous or unsupported response (or response body) from the backend: 502.
    BadResponse(&'static str),
}

impl HttpError {
    /// The status code to answer the client with.
    pub fn status(&self) -> u16 {
        match self {
            HttpError::BadRequest(_) => 400,
            HttpError::UriTooLong => 414,
            HttpError::HeadersTooLarge => 431,
            HttpError::VersionNotSupported => 505,
            HttpError::NotImplemented(_) => 501,
            HttpError::BadResponse(_) => 502,
        }
    }
}

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HttpError::BadRequest(why) => write!(f, "bad request: {why}"),
            HttpError::UriTooLong => f.write_str("request line too long"),
            HttpError::HeadersTooLarge => f.write_str("request head too large"),
            HttpError::VersionNotSupported => f.write_str("HTTP version not supported"),
            HttpError::NotImplemented(what) => write!(f, "not implemented: {what}"),
            HttpError::BadResponse(why) => write!(f, "bad response from backend: {why}"),
        }
    }
}

impl std::error::Error for HttpError {}

/// A complete, self-delimited error response: the body is the reason phrase
/// and a newline, so `$len` is the reason's length plus one (checked by a test).
macro_rules! canned {
    ($code:literal, $reason:literal, $len:literal) => {
        concat!(
            "HTTP/1.1 ",
            $code,
            " ",
            $reason,
            "\r\nContent-Type: text/plain\r\nContent-Length: ",
            $len,
            "\r\nConnection: close\r\n\r\n",
            $reason,
            "\n"
        )
        .as_bytes()
    };
}

/// The response to send for `status`, closing the connection. Statuses without
/// a canned response get 500 (a caller bug, but still a valid answer).
pub fn error_response(status: u16) -> &'static [u8] {
    match status {
        400 => canned!("400", "Bad Request", "12"),
        408 => canned!("408", "Request Timeout", "16"),
        413 => canned!("413", "Content Too Large", "18"),
        414 => canned!("414", "URI Too Long", "13"),
        431 => canned!("431", "Request Header Fields Too Large", "32"),
        501 => canned!("501", "Not Implemented", "16"),
        502 => canned!("502", "Bad Gateway", "12"),
        503 => canned!("503", "Service Unavailable", "20"),
        504 => canned!("504", "Gateway Timeout", "16"),
        505 => canned!("505", "HTTP Version Not Supported", "27"),
        _ => canned!("500", "Internal Server Error", "22"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canned_responses_are_well_formed() {
        for status in [400, 408, 413, 414, 431, 500, 501, 502, 503, 504, 505] {
            let bytes = error_response(status);
            let mut headers = [httparse::EMPTY_HEADER; 8];
            let mut resp = httparse::Response::new(&mut headers);
            let parsed = resp.parse(bytes);
            let Ok(httparse::Status::Complete(head_len)) = parsed else {
                panic!("{status}: {parsed:?}");
            };
            assert_eq!(resp.code, Some(status));
            let body = bytes.get(head_len..).unwrap_or_default();
            let cl = resp.headers.iter().find(|h| h.name == "Content-Length");
            let cl = cl.map(|h| h.value);
            assert_eq!(cl, Some(body.len().to_string().as_bytes()), "{status}");
            let reason = resp.reason.unwrap_or_default();
            assert_eq!(body, format!("{reason}\n").as_bytes());
        }
        assert_eq!(error_response(418), error_response(500));
    }

    #[test]
    fn status_and_display() {
        let cases = [
            (HttpError::BadRequest("x"), 400),
            (HttpError::UriTooLong, 414),
            (HttpError::HeadersTooLarge, 431),
            (HttpError::VersionNotSupported, 505),
            (HttpError::NotImplemented("x"), 501),
            (HttpError::BadResponse("x"), 502),
        ];
        for (err, status) in cases {
            assert_eq!(err.status(), status);
            assert!(!err.to_string().is_empty());
        }
    }
}
