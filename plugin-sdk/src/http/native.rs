//! The transport outside a host, for unit tests: plain HTTP/1.1 over
//! `std::net::TcpStream`, one connection per request (`Connection: close`).
//!
//! No grants are checked and there is no TLS: natively a plugin talks only
//! to a test server it started itself.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use super::{Prepared, Response, Scheme};
use crate::Error;

/// The longest status or header line read: a guard against a server that
/// never ends a line.
const MAX_LINE: usize = 64 << 10;

pub(crate) fn send(request: &Prepared<'_>) -> Result<Response, Error> {
    let target = &request.target;
    let host_port = target.host_port();
    if target.scheme == Scheme::Https {
        return Err(Error::new(format!(
            "https to {host_port}: TLS works only inside a sluice host; natively (in unit \
             tests) the SDK speaks plain http to a local test server"
        )));
    }
    let deadline = Instant::now() + request.timeout;
    let stream = connect(request, &host_port, deadline)?;
    let io_error = |e: io::Error| match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => request.timed_out(),
        _ => Error::retryable(format!("talking to {host_port}: {e}")),
    };

    let mut head = format!(
        "{} {} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n",
        request.method, target.path_and_query, target.authority
    );
    for (name, value) in &request.headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    let mut writer = &stream;
    set_timeouts(&stream, deadline).map_err(io_error)?;
    writer
        .write_all(head.as_bytes())
        .and_then(|()| writer.write_all(request.body))
        .and_then(|()| writer.flush())
        .map_err(io_error)?;

    let mut reader = BufReader::new(Deadlined {
        stream: &stream,
        deadline,
    });
    let (status, headers) = loop {
        let head = read_head(&mut reader).map_err(io_error)?;
        // An interim response (100 Continue) is followed by the real one.
        if !(100..200).contains(&head.0) || head.0 == 101 {
            break head;
        }
    };
    let no_body = request.method == "HEAD" || status == 204 || status == 304;
    let body = if no_body {
        Vec::new()
    } else {
        read_body(&mut reader, &headers, request).map_err(|e| match e {
            BodyError::TooLarge => request.body_too_large(),
            BodyError::Io(e) => io_error(e),
        })?
    };
    Ok(Response {
        status,
        headers,
        body,
    })
}

fn connect(request: &Prepared<'_>, host_port: &str, deadline: Instant) -> Result<TcpStream, Error> {
    let host = request
        .target
        .host
        .trim_start_matches('[')
        .trim_end_matches(']');
    let addresses: Vec<_> = (host, request.target.port)
        .to_socket_addrs()
        .map_err(|e| {
            Error::retryable(format!("DNS error looking up {}: {e}", request.target.host))
        })?
        .collect();
    let mut last = None;
    for address in addresses {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(request.timed_out());
        }
        match TcpStream::connect_timeout(&address, left) {
            Ok(stream) => return Ok(stream),
            Err(e) => last = Some(e),
        }
    }
    Err(match last {
        Some(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
            Error::retryable(format!("connection refused to {host_port}"))
        }
        Some(e)
            if matches!(
                e.kind(),
                io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock
            ) =>
        {
            Error::retryable(format!("connecting to {host_port} timed out"))
        }
        Some(e) => Error::retryable(format!("connecting to {host_port}: {e}")),
        None => Error::retryable(format!("{} not found (DNS)", request.target.host)),
    })
}

fn set_timeouts(stream: &TcpStream, deadline: Instant) -> io::Result<()> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(io::ErrorKind::TimedOut.into());
    }
    stream.set_read_timeout(Some(left))?;
    stream.set_write_timeout(Some(left))
}

/// A stream whose every read waits at most until the deadline.
struct Deadlined<'a> {
    stream: &'a TcpStream,
    deadline: Instant,
}

impl Read for Deadlined<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::ErrorKind::TimedOut.into());
        }
        self.stream
            .set_read_timeout(Some(left.max(Duration::from_millis(1))))?;
        let mut stream = self.stream;
        stream.read(buf)
    }
}

/// Reads a status line and the headers after it.
fn read_head(reader: &mut impl BufRead) -> io::Result<(u16, Vec<(String, String)>)> {
    let line = read_line(reader)?;
    let mut parts = line.splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    let status = parts.next().and_then(|s| s.parse::<u16>().ok());
    let status = match status {
        Some(status) if version.starts_with("HTTP/1.") => status,
        _ => return Err(invalid(format!("not an HTTP/1.x status line: {line:?}"))),
    };
    let mut headers = Vec::new();
    loop {
        let line = read_line(reader)?;
        if line.is_empty() {
            return Ok((status, headers));
        }
        let Some((name, value)) = line.split_once(':') else {
            return Err(invalid(format!("not a header line: {line:?}")));
        };
        headers.push((name.trim().to_owned(), value.trim().to_owned()));
    }
}

enum BodyError {
    TooLarge,
    Io(io::Error),
}

impl From<io::Error> for BodyError {
    fn from(e: io::Error) -> Self {
        BodyError::Io(e)
    }
}

/// Reads the body as the headers frame it: chunked, by Content-Length, or
/// up to the end of the connection.
fn read_body(
    reader: &mut impl BufRead,
    headers: &[(String, String)],
    request: &Prepared<'_>,
) -> Result<Vec<u8>, BodyError> {
    let header = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    };
    let max = request.max_body;
    let chunked = header("transfer-encoding").is_some_and(|v| {
        v.rsplit(',')
            .next()
            .is_some_and(|last| last.trim().eq_ignore_ascii_case("chunked"))
    });
    if chunked {
        return read_chunked(reader, max);
    }
    if let Some(length) = header("content-length") {
        let length: u64 = length
            .parse()
            .map_err(|_| invalid(format!("invalid Content-Length {length:?}")))?;
        if length > max as u64 {
            return Err(BodyError::TooLarge);
        }
        let mut body = vec![0; length as usize];
        reader.read_exact(&mut body)?;
        return Ok(body);
    }
    read_bounded(reader, max)
}

fn read_chunked(reader: &mut impl BufRead, max: usize) -> Result<Vec<u8>, BodyError> {
    let mut body = Vec::new();
    loop {
        let line = read_line(reader)?;
        let size = line.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size, 16)
            .map_err(|_| invalid(format!("invalid chunk size {size:?}")))?;
        if size == 0 {
            // Trailers, up to the blank line; they are not kept.
            while !read_line(reader)?.is_empty() {}
            return Ok(body);
        }
        if body.len().saturating_add(size) > max {
            return Err(BodyError::TooLarge);
        }
        let start = body.len();
        body.resize(start + size, 0);
        reader.read_exact(&mut body[start..])?;
        if !read_line(reader)?.is_empty() {
            return Err(invalid("a chunk is not followed by CRLF".to_owned()).into());
        }
    }
}

fn read_bounded(reader: &mut impl Read, max: usize) -> Result<Vec<u8>, BodyError> {
    let mut body = Vec::new();
    reader.take(max as u64 + 1).read_to_end(&mut body)?;
    if body.len() > max {
        return Err(BodyError::TooLarge);
    }
    Ok(body)
}

/// One line without its CRLF (or LF); an error at the end of the stream.
fn read_line(reader: &mut impl BufRead) -> io::Result<String> {
    let mut line = Vec::new();
    let n = reader.take(MAX_LINE as u64).read_until(b'\n', &mut line)?;
    if n == 0 {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the connection closed before the response ended",
        ));
    }
    if line.last() != Some(&b'\n') {
        return Err(invalid("a line is too long or unterminated".to_owned()));
    }
    line.pop();
    if line.last() == Some(&b'\r') {
        line.pop();
    }
    Ok(String::from_utf8_lossy(&line).into_owned())
}

fn invalid(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::testing::{Reply, Server};
    use crate::http::{Request, Target};

    fn prepared(max_body: usize) -> Prepared<'static> {
        Prepared {
            method: "GET",
            target: Target::parse("http://h/").unwrap(),
            headers: vec![],
            body: b"",
            timeout: Duration::from_secs(5),
            max_body,
        }
    }

    #[test]
    fn bodies_are_framed_by_chunks_length_or_close() {
        let chunked = b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: 1\r\n\r\n";
        let headers = vec![("Transfer-Encoding".to_owned(), "chunked".to_owned())];
        let body = read_body(&mut &chunked[..], &headers, &prepared(100))
            .ok()
            .unwrap();
        assert_eq!(body, b"hello world");
        assert!(matches!(
            read_body(&mut &chunked[..], &headers, &prepared(8)),
            Err(BodyError::TooLarge)
        ));

        let headers = vec![("content-length".to_owned(), "3".to_owned())];
        assert_eq!(
            read_body(&mut &b"abcdef"[..], &headers, &prepared(3))
                .ok()
                .unwrap(),
            b"abc"
        );
        assert!(matches!(
            read_body(&mut &b"abcdef"[..], &headers, &prepared(2)),
            Err(BodyError::TooLarge)
        ));

        assert_eq!(
            read_body(&mut &b"to the end"[..], &[], &prepared(10))
                .ok()
                .unwrap(),
            b"to the end"
        );
        assert!(matches!(
            read_body(&mut &b"to the end"[..], &[], &prepared(9)),
            Err(BodyError::TooLarge)
        ));
    }

    #[test]
    fn heads_parse_and_garbage_is_refused() {
        let (status, headers) =
            read_head(&mut &b"HTTP/1.1 201 Created\r\nA: 1\nB:2\r\n\r\nbody"[..]).unwrap();
        assert_eq!(status, 201);
        assert_eq!(
            headers,
            [
                ("A".to_owned(), "1".to_owned()),
                ("B".to_owned(), "2".to_owned())
            ]
        );
        let err = read_head(&mut &b"SSH-2.0-OpenSSH\r\n"[..]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "not an HTTP/1.x status line: \"SSH-2.0-OpenSSH\""
        );
        let err = read_head(&mut &b"HTTP/1.1 200 OK\r\n"[..]).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    }

    #[test]
    fn a_request_reaches_a_local_server_and_its_answer_comes_back() {
        let server = Server::start(|request| {
            Reply::new(201)
                .header("X-Seen", request.method.clone())
                .body(format!(
                    "{} {}",
                    request.path,
                    String::from_utf8_lossy(&request.body)
                ))
        });
        let response = Request::post(server.url("/items?x=1"))
            .header("X-Id", "7")
            .body("payload")
            .send()
            .unwrap();
        assert_eq!(response.status, 201);
        assert_eq!(response.header("x-seen"), Some("POST"));
        assert_eq!(response.text().unwrap(), "/items?x=1 payload");
        let seen = server.requests();
        assert_eq!(seen.len(), 1);
        assert_eq!(seen[0].header("x-id"), Some("7"));
        assert_eq!(seen[0].header("content-length"), Some("7"));
        assert_eq!(seen[0].header("host"), Some(server.authority().as_str()));
    }

    #[test]
    fn large_chunked_bodies_are_bounded() {
        let server = Server::start(|_| Reply::new(200).body(vec![b'x'; 100_000]).chunked());
        let response = Request::get(server.url("/")).send().unwrap();
        assert_eq!(response.body.len(), 100_000);
        let err = Request::get(server.url("/"))
            .max_body(99_999)
            .send()
            .unwrap_err();
        assert_eq!(
            err.message(),
            format!(
                "the response body from {} is larger than 99999 bytes (raise the limit with max_body)",
                server.authority()
            )
        );
    }

    #[test]
    fn refused_connections_and_https_fail_clearly() {
        let refused = crate::http::testing::REFUSED;
        let err = Request::get(format!("http://{refused}/"))
            .send()
            .unwrap_err();
        assert_eq!(err.message(), format!("connection refused to {refused}"));
        assert!(err.is_retryable());
        let err = Request::get("https://example.invalid/").send().unwrap_err();
        assert!(
            err.message()
                .starts_with("https to example.invalid:443: TLS works only inside a sluice host"),
            "{err}"
        );
    }

    #[test]
    fn a_silent_server_times_out() {
        let server = Server::start(|_| Reply::new(200).delay(Duration::from_secs(2)));
        let err = Request::get(server.url("/"))
            .timeout(Duration::from_millis(200))
            .send()
            .unwrap_err();
        assert_eq!(
            err.message(),
            format!(
                "no complete response from {} within 0.2 s",
                server.authority()
            )
        );
        assert!(err.is_retryable());
    }
}
