//! A local HTTP server for a plugin's native unit tests (not in components).
//!
//! It listens on `127.0.0.1` on a free port, answers each request with what
//! the test's handler returns and records every request it got. One
//! connection at a time, one request per connection: what the SDK's native
//! client does. Dropping the server stops it.
//!
//! ```
//! use sluice_plugin_sdk::http::{Request, testing::{Reply, Server}};
//!
//! let server = Server::start(|request| match request.path.as_str() {
//!     "/health" => Reply::new(200).body("ok"),
//!     _ => Reply::new(404),
//! });
//! let response = Request::get(server.url("/health")).send().unwrap();
//! assert_eq!((response.status, response.text().unwrap()), (200, "ok"));
//! assert_eq!(server.requests()[0].method, "GET");
//! ```

use std::io::{self, BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// How long the server waits for a client to send its request.
const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// An address where nothing listens, for testing what a refused
/// connection reports: port 1 on the loopback. A port freed by dropping a
/// [`Server`] is not as sure: until the test connects, any process on the
/// machine may be handed it (port 1 is below the range the system hands
/// out), and a client handed that very port as its own connects to itself.
pub const REFUSED: &str = "127.0.0.1:1";

/// A request the server received.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordedRequest {
    /// The method (`POST`).
    pub method: String,
    /// The path and query (`/v1/items?page=2`).
    pub path: String,
    /// The headers in the order received.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

impl RecordedRequest {
    /// The first value of header `name`, compared without case.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as text (invalid UTF-8 replaced).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// What the server answers, built with chained calls.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    chunked: bool,
    delay: Duration,
}

impl Reply {
    /// An answer with `status` and no body.
    pub fn new(status: u16) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: Vec::new(),
            chunked: false,
            delay: Duration::ZERO,
        }
    }

    /// Adds a header.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Sets the body.
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }

    /// Sends the body with chunked transfer coding instead of a
    /// `Content-Length`.
    pub fn chunked(mut self) -> Self {
        self.chunked = true;
        self
    }

    /// Waits this long before answering (a slow server), or until the
    /// server is dropped.
    pub fn delay(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }
}

type Handler = Box<dyn Fn(&RecordedRequest) -> Reply + Send>;

/// The server; see the module documentation.
pub struct Server {
    address: SocketAddr,
    requests: Arc<Mutex<Vec<RecordedRequest>>>,
    stopping: Arc<AtomicBool>,
    /// Dropped to cut a [`Reply::delay`] short.
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    /// Starts a server that answers every request with what `handler`
    /// returns.
    ///
    /// # Panics
    /// When no local port can be bound (the test cannot run).
    pub fn start(handler: impl Fn(&RecordedRequest) -> Reply + Send + 'static) -> Self {
        let listener =
            TcpListener::bind("127.0.0.1:0").expect("binding a local port for the test server");
        let address = listener.local_addr().expect("the test server's address");
        let requests = Arc::new(Mutex::new(Vec::new()));
        let stopping = Arc::new(AtomicBool::new(false));
        let (stop, stopped) = mpsc::channel();
        let thread = {
            let requests = Arc::clone(&requests);
            let stopping = Arc::clone(&stopping);
            let handler: Handler = Box::new(handler);
            std::thread::spawn(move || {
                for connection in listener.incoming() {
                    if stopping.load(Ordering::SeqCst) {
                        break;
                    }
                    if let Ok(connection) = connection {
                        // A client that gave up is its test's business.
                        let _ = serve(connection, &handler, &requests, &stopped);
                    }
                }
            })
        };
        Self {
            address,
            requests,
            stopping,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// `http://127.0.0.1:PORT` followed by `path` (which starts with `/`).
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.address)
    }

    /// `127.0.0.1:PORT`.
    pub fn authority(&self) -> String {
        self.address.to_string()
    }

    /// The requests received so far, oldest first.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.requests
            .lock()
            .expect("the test server's lock")
            .clone()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stopping.store(true, Ordering::SeqCst);
        drop(self.stop.take());
        // Wakes the accept loop, which then sees `stopping`.
        let _ = TcpStream::connect(self.address);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn serve(
    connection: TcpStream,
    handler: &Handler,
    requests: &Mutex<Vec<RecordedRequest>>,
    stopped: &mpsc::Receiver<()>,
) -> io::Result<()> {
    connection.set_read_timeout(Some(READ_TIMEOUT))?;
    let mut reader = BufReader::new(&connection);
    let request = read_request(&mut reader)?;
    requests
        .lock()
        .expect("the test server's lock")
        .push(request.clone());
    let reply = handler(&request);
    if !reply.delay.is_zero() && stopped.recv_timeout(reply.delay) != Err(RecvTimeoutError::Timeout)
    {
        return Ok(());
    }
    let mut out = format!(
        "HTTP/1.1 {} {}\r\nConnection: close\r\n",
        reply.status,
        super::status_line(reply.status)
            .split_once(' ')
            .map_or("Status", |(_, reason)| reason)
    );
    for (name, value) in &reply.headers {
        out.push_str(&format!("{name}: {value}\r\n"));
    }
    let mut writer = &connection;
    if reply.chunked {
        out.push_str("Transfer-Encoding: chunked\r\n\r\n");
        writer.write_all(out.as_bytes())?;
        for chunk in reply.body.chunks(4000) {
            write!(writer, "{:x}\r\n", chunk.len())?;
            writer.write_all(chunk)?;
            writer.write_all(b"\r\n")?;
        }
        writer.write_all(b"0\r\n\r\n")?;
    } else {
        out.push_str(&format!("Content-Length: {}\r\n\r\n", reply.body.len()));
        writer.write_all(out.as_bytes())?;
        writer.write_all(&reply.body)?;
    }
    writer.flush()
}

fn read_request(reader: &mut impl BufRead) -> io::Result<RecordedRequest> {
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let (Some(method), Some(path)) = (parts.next(), parts.next()) else {
        return Err(io::ErrorKind::InvalidData.into());
    };
    let (method, path) = (method.to_owned(), path.to_owned());
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            headers.push((name.trim().to_owned(), value.trim().to_owned()));
        }
    }
    let length = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse::<usize>().ok())
        .unwrap_or(0);
    let mut body = vec![0; length];
    reader.read_exact(&mut body)?;
    Ok(RecordedRequest {
        method,
        path,
        headers,
        body,
    })
}
