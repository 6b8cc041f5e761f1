//! The head (request line and headers) of one HTTP/1.x request, read by the node
//! listener's connection loop before hyper sees the request, so that a plain `GET` of
//! an installer file can be answered with `sendfile` (see [`super::conn`]). Pure: bytes
//! in, a verdict out; anything unusual is left to hyper.

/// A head longer than this is not ours to judge: hyper answers it.
pub const MAX_HEAD: usize = 16 * 1024;
/// Headers read; a request with more goes to hyper.
const MAX_HEADERS: usize = 48;

/// What the bytes read so far hold.
#[derive(Debug, PartialEq, Eq)]
pub enum Head {
    /// The head is not complete yet; read more.
    Partial,
    /// A complete head rackseed understands.
    Complete(Parsed),
    /// Something hyper must answer (malformed, too large, a body of unknown length):
    /// the rest of the connection goes to hyper.
    Other,
}

/// A complete request head.
#[derive(Debug, PartialEq, Eq)]
pub struct Parsed {
    /// Bytes of the head, up to and including the blank line.
    pub len: usize,
    /// The bytes of the body that follows (`Content-Length`, 0 without one).
    pub body: u64,
    /// The path of the request target, without the query.
    pub path: String,
    /// The query, without `?`.
    pub query: Option<String>,
    /// HTTP/1.0 (the response must say `Connection: keep-alive` to keep it).
    pub http10: bool,
    /// Whether the client keeps the connection after this response.
    pub keep_alive: bool,
    /// A `GET` of the whole resource: no `Range`, no `If-*`, no body.
    pub whole_get: bool,
}

/// Judges the bytes read so far from a connection.
pub fn parse(buf: &[u8]) -> Head {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD => return Head::Partial,
        _ => return Head::Other,
    };
    if len > MAX_HEAD {
        return Head::Other;
    }
    let (Some(method), Some(target), Some(version)) = (req.method, req.path, req.version) else {
        return Head::Other;
    };
    if !target.starts_with('/') {
        return Head::Other;
    }
    let http10 = version == 0;
    let mut body: Option<u64> = None;
    let mut close = false;
    let mut keep = false;
    let mut conditional = false;
    for h in req.headers.iter() {
        let name = h.name;
        if name.eq_ignore_ascii_case("transfer-encoding") {
            return Head::Other;
        }
        if name.eq_ignore_ascii_case("content-length") {
            let Some(n) = std::str::from_utf8(h.value)
                .ok()
                .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|v| v.parse::<u64>().ok())
            else {
                return Head::Other;
            };
            if body.is_some_and(|b| b != n) {
                return Head::Other;
            }
            body = Some(n);
        } else if name.eq_ignore_ascii_case("connection") {
            for token in String::from_utf8_lossy(h.value).split(',') {
                let token = token.trim();
                close |= token.eq_ignore_ascii_case("close");
                keep |= token.eq_ignore_ascii_case("keep-alive");
                if token.eq_ignore_ascii_case("upgrade") {
                    return Head::Other;
                }
            }
        } else if name.eq_ignore_ascii_case("range")
            || name.len() > 3 && name[..3].eq_ignore_ascii_case("if-")
        {
            conditional = true;
        }
    }
    let body = body.unwrap_or(0);
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p, Some(q.to_string())),
        None => (target, None),
    };
    Head::Complete(Parsed {
        len,
        body,
        path: path.to_string(),
        query,
        http10,
        keep_alive: !close && (!http10 || keep),
        whole_get: method == "GET" && !conditional && body == 0,
    })
}

/// The value of `key` in a query string, when it is plain (no percent-encoding or
/// `+`, which the router decodes; the caller then lets the router answer).
pub fn query_value<'a>(query: &'a str, key: &str) -> Option<&'a str> {
    query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v)
        .filter(|v| !v.contains(['%', '+']))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn complete(s: &str) -> Parsed {
        match parse(s.as_bytes()) {
            Head::Complete(p) => p,
            other => panic!("{s:?}: {other:?}"),
        }
    }

    #[test]
    fn a_plain_get_is_a_whole_file_request_kept_alive() {
        let p = complete(
            "GET /installer/default/linux?mac=52-54-00-00-00-01 HTTP/1.1\r\nHost: x\r\n\r\nGET /next",
        );
        assert_eq!(p.len, 72);
        assert_eq!(p.path, "/installer/default/linux");
        assert_eq!(p.query.as_deref(), Some("mac=52-54-00-00-00-01"));
        assert!(p.whole_get && p.keep_alive && !p.http10);
        assert_eq!(p.body, 0);
        assert_eq!(
            query_value(p.query.as_deref().unwrap(), "mac"),
            Some("52-54-00-00-00-01")
        );
        assert_eq!(query_value("mac=52%2D54", "mac"), None);
    }

    #[test]
    fn ranges_conditions_heads_and_bodies_are_not_whole_file_gets() {
        for s in [
            "GET /x HTTP/1.1\r\nRange: bytes=0-1\r\n\r\n",
            "GET /x HTTP/1.1\r\nIf-Modified-Since: y\r\n\r\n",
            "HEAD /x HTTP/1.1\r\n\r\n",
            "POST /x HTTP/1.1\r\nContent-Length: 5\r\n\r\n",
        ] {
            assert!(!complete(s).whole_get, "{s:?}");
        }
        assert_eq!(
            complete("POST /x HTTP/1.1\r\nContent-Length: 5\r\n\r\n").body,
            5
        );
    }

    #[test]
    fn keep_alive_follows_the_version_and_connection_header() {
        assert!(!complete("GET /x HTTP/1.1\r\nConnection: close\r\n\r\n").keep_alive);
        assert!(!complete("GET /x HTTP/1.0\r\n\r\n").keep_alive);
        let p = complete("GET /x HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n");
        assert!(p.keep_alive && p.http10);
    }

    #[test]
    fn what_hyper_must_judge_is_left_to_it() {
        for s in [
            "POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST /x HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
            "POST /x HTTP/1.1\r\nContent-Length: +5\r\n\r\n",
            "GET /x HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
            "GET http://example/x HTTP/1.1\r\n\r\n",
            "GET /x HTTP/2.0\r\n\r\n",
            "\0\0\0",
        ] {
            assert_eq!(parse(s.as_bytes()), Head::Other, "{s:?}");
        }
        assert_eq!(parse(b"GET /x HTTP/1.1\r\nHost"), Head::Partial);
        let huge = format!("GET /x HTTP/1.1\r\nX: {}", "a".repeat(MAX_HEAD));
        assert_eq!(parse(huge.as_bytes()), Head::Other);
    }
}
