//! The transport inside a component: `wasi:http/outgoing-handler`.
//!
//! One deadline bounds the whole exchange: every wait polls the thing
//! awaited together with a monotonic-clock timer for the deadline. The
//! per-phase timeouts of `request-options` are set too, so that the host
//! gives up on its side as well. Resources are dropped children first
//! (a stream before its body, a body before its response), as the
//! component model requires.
//!
//! The host runs the request in the background once `handle` returns: its
//! grant checks and the connection may fail while the body is being
//! written, and the response future then holds the reason.

use std::time::Duration;

use wasi::clocks::monotonic_clock;
use wasi::http::outgoing_handler;
use wasi::http::types::{
    Fields, HeaderError, IncomingBody, IncomingResponse, Method, OutgoingBody, OutgoingRequest,
    RequestOptions, Scheme as WasiScheme,
};
use wasi::io::poll::{self, Pollable};
use wasi::io::streams::{OutputStream, StreamError};

use super::wasi_errors::from_code;
use super::{Prepared, Response, Scheme};
use crate::Error;

/// How much one read of the response body asks for.
const READ_CHUNK: u64 = 64 << 10;

/// A point on the monotonic clock, in nanoseconds.
#[derive(Clone, Copy)]
struct Deadline(u64);

impl Deadline {
    fn after(timeout: Duration) -> Self {
        let nanos = u64::try_from(timeout.as_nanos()).unwrap_or(u64::MAX);
        Self(monotonic_clock::now().saturating_add(nanos))
    }

    /// Waits until `pollable` is ready (`true`) or the deadline passes
    /// (`false`).
    fn wait(self, pollable: &Pollable) -> bool {
        let timer = monotonic_clock::subscribe_instant(self.0);
        poll::poll(&[pollable, &timer]).contains(&0)
    }
}

pub(crate) fn send(request: &Prepared<'_>) -> Result<Response, Error> {
    let host_port = request.target.host_port();
    let deadline = Deadline::after(request.timeout);
    let outgoing = outgoing_request(request)?;
    // A request whose body is never taken goes out with a plain empty body;
    // a body taken is streamed.
    let body = (!request.body.is_empty()).then(|| {
        outgoing
            .body()
            .expect("the body of a new outgoing request is taken once")
    });
    let options = request_options(request.timeout);
    let future = outgoing_handler::handle(outgoing, Some(options))
        .map_err(|code| from_code(&code, &host_port))?;

    // A write fails when the host gave up on the request (refused the
    // address, lost the connection), and the response future then says
    // why; or when the server answered early, and the answer is what counts.
    let written = match body {
        Some(body) => write_body(body, request, deadline),
        None => Ok(()),
    };

    let pollable = future.subscribe();
    let ready = deadline.wait(&pollable);
    drop(pollable);
    if !ready {
        return Err(written.err().unwrap_or_else(|| request.timed_out()));
    }
    let response = match future.get() {
        Some(Ok(Ok(response))) => response,
        Some(Ok(Err(code))) => return Err(from_code(&code, &host_port)),
        Some(Err(())) => unreachable!("the response is taken once"),
        None => unreachable!("a ready future has its value"),
    };
    drop(future);
    read_response(request, response, deadline)
}

fn outgoing_request(request: &Prepared<'_>) -> Result<OutgoingRequest, Error> {
    let entries: Vec<(String, Vec<u8>)> = request
        .headers
        .iter()
        .map(|(name, value)| ((*name).to_owned(), value.clone().into_bytes()))
        .collect();
    let headers = Fields::from_list(&entries).map_err(|e| match e {
        HeaderError::Forbidden => Error::new("a header of the request is forbidden by the host"),
        HeaderError::InvalidSyntax | HeaderError::Immutable => {
            Error::new("a header of the request is invalid")
        }
    })?;
    let outgoing = OutgoingRequest::new(headers);
    let method = match request.method {
        "GET" => Method::Get,
        "HEAD" => Method::Head,
        "POST" => Method::Post,
        "PUT" => Method::Put,
        "DELETE" => Method::Delete,
        "CONNECT" => Method::Connect,
        "OPTIONS" => Method::Options,
        "TRACE" => Method::Trace,
        "PATCH" => Method::Patch,
        other => Method::Other(other.to_owned()),
    };
    let invalid = |what: &str| Error::new(format!("the host refused the request's {what}"));
    outgoing
        .set_method(&method)
        .map_err(|()| invalid("method"))?;
    let scheme = match request.target.scheme {
        Scheme::Http => WasiScheme::Http,
        Scheme::Https => WasiScheme::Https,
    };
    outgoing
        .set_scheme(Some(&scheme))
        .map_err(|()| invalid("scheme"))?;
    outgoing
        .set_authority(Some(&request.target.authority))
        .map_err(|()| invalid("host"))?;
    outgoing
        .set_path_with_query(Some(&request.target.path_and_query))
        .map_err(|()| invalid("path"))?;
    Ok(outgoing)
}

/// The host's own timeouts for connecting, the first byte and the gaps
/// between bytes, each the whole timeout; a host that does not support one
/// refuses to set it, and the deadline still holds.
fn request_options(timeout: Duration) -> RequestOptions {
    let nanos = u64::try_from(timeout.as_nanos()).unwrap_or(u64::MAX);
    let options = RequestOptions::new();
    let _ = options.set_connect_timeout(Some(nanos));
    let _ = options.set_first_byte_timeout(Some(nanos));
    let _ = options.set_between_bytes_timeout(Some(nanos));
    options
}

/// Writes the body and finishes it.
fn write_body(body: OutgoingBody, request: &Prepared<'_>, deadline: Deadline) -> Result<(), Error> {
    let stream = body
        .write()
        .expect("the stream of a new outgoing body is taken once");
    let written = write_all(&stream, request, deadline);
    drop(stream);
    written?;
    OutgoingBody::finish(body, None).map_err(|code| from_code(&code, &request.target.host_port()))
}

/// Writes as much as the stream permits at a time (`check-write`), waiting
/// for room up to the deadline, then flushes and waits for the flush.
fn write_all(
    stream: &OutputStream,
    request: &Prepared<'_>,
    deadline: Deadline,
) -> Result<(), Error> {
    let failed = |e: StreamError| {
        let why = match e {
            StreamError::Closed => "the connection closed".to_owned(),
            StreamError::LastOperationFailed(e) => e.to_debug_string(),
        };
        Error::retryable(format!(
            "sending the request body to {}: {why}",
            request.target.host_port()
        ))
    };
    let wait = || {
        let pollable = stream.subscribe();
        let ready = deadline.wait(&pollable);
        drop(pollable);
        if ready {
            Ok(())
        } else {
            Err(request.timed_out())
        }
    };
    let mut rest = request.body;
    while !rest.is_empty() {
        let permitted = stream.check_write().map_err(failed)?;
        if permitted == 0 {
            wait()?;
            continue;
        }
        let n = rest
            .len()
            .min(usize::try_from(permitted).unwrap_or(usize::MAX));
        stream.write(&rest[..n]).map_err(failed)?;
        rest = &rest[n..];
    }
    stream.flush().map_err(failed)?;
    // The flush is done when the stream takes writes again.
    loop {
        wait()?;
        if stream.check_write().map_err(failed)? > 0 {
            return Ok(());
        }
    }
}

fn read_response(
    request: &Prepared<'_>,
    response: IncomingResponse,
    deadline: Deadline,
) -> Result<Response, Error> {
    let host_port = request.target.host_port();
    let status = response.status();
    let fields = response.headers();
    let headers: Vec<(String, String)> = fields
        .entries()
        .into_iter()
        .map(|(name, value)| (name, String::from_utf8_lossy(&value).into_owned()))
        .collect();
    drop(fields);
    let declared = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > request.max_body as u64) {
        return Err(request.body_too_large());
    }
    let incoming = response
        .consume()
        .expect("the body of a new response is taken once");
    let body = read_body(request, &incoming, deadline, &host_port);
    // Trailers are not kept; finishing releases the body before its response.
    drop(IncomingBody::finish(incoming));
    drop(response);
    Ok(Response {
        status,
        headers,
        body: body?,
    })
}

fn read_body(
    request: &Prepared<'_>,
    incoming: &IncomingBody,
    deadline: Deadline,
    host_port: &str,
) -> Result<Vec<u8>, Error> {
    let stream = incoming
        .stream()
        .expect("the stream of a new body is taken once");
    let mut body = Vec::new();
    loop {
        match stream.read(READ_CHUNK) {
            Ok(chunk) if chunk.is_empty() => {
                let pollable = stream.subscribe();
                let ready = deadline.wait(&pollable);
                drop(pollable);
                if !ready {
                    return Err(request.timed_out());
                }
            }
            Ok(chunk) => {
                if body.len() + chunk.len() > request.max_body {
                    return Err(request.body_too_large());
                }
                body.extend_from_slice(&chunk);
            }
            Err(StreamError::Closed) => return Ok(body),
            Err(StreamError::LastOperationFailed(e)) => {
                return Err(match wasi::http::types::http_error_code(&e) {
                    Some(code) => from_code(&code, host_port),
                    None => Error::retryable(format!(
                        "reading the response from {host_port}: {}",
                        e.to_debug_string()
                    )),
                });
            }
        }
    }
}
