//! The action's deadline around host calls that wait.
//!
//! Epoch interruption stops running wasm, but not a plugin parked in a host
//! call: `std::thread::sleep` in a guest is `wasi:io/poll`'s
//! `pollable.block` on a clock, a plugin waiting for a network answer polls
//! too, and the `blocking-*` methods of `wasi:io/streams` wait for a stream
//! (an HTTP request body nobody reads, a response that never comes). Every
//! one of those is replaced here by a version that gives up at the store's
//! deadline or when the action is cancelled, trapping as an interrupt does,
//! so that every call of a plugin ends by its deadline.

use crate::host::HostState;
use std::time::{Duration, Instant};
use wasmtime::StoreContextMut;
use wasmtime::component::{Linker, Resource, ResourceTable};
use wasmtime_wasi_io::bindings::wasi::io::poll::{Host as _, HostPollable as _};
use wasmtime_wasi_io::bindings::wasi::io::streams::{Host as _, HostInputStream, HostOutputStream};
use wasmtime_wasi_io::poll::DynPollable;
use wasmtime_wasi_io::streams::{DynInputStream, DynOutputStream};

/// The `wasi:io` instances wasmtime-wasi 48 defines; components built
/// against any earlier 0.2 release link to them.
const POLL_INSTANCE: &str = "wasi:io/poll@0.2.12";
const STREAMS_INSTANCE: &str = "wasi:io/streams@0.2.12";

/// Runs a wait of the guest's on its store's resource table until it ends,
/// the deadline passes or the action is cancelled (then a trap), and logs
/// the HTTP refusals decided meanwhile.
fn until_stopped<T>(
    store: &mut StoreContextMut<'_, HostState>,
    wait: impl AsyncFnOnce(&mut ResourceTable) -> T,
) -> wasmtime::Result<T> {
    let (deadline, cancel) = (store.data().deadline, store.data().cancel.clone());
    let table = &mut store.data_mut().table;
    let result = wasmtime_wasi::runtime::in_tokio(async {
        tokio::select! {
            done = wait(table) => Ok(done),
            stop = stopped(deadline, &cancel) => Err(stop),
        }
    });
    store.data_mut().log_http_refusals();
    result
}

/// Defines a `wasi:io/streams` method that waits, as the original does but
/// through [`until_stopped`]: `$call` is the original, on `$table` and the
/// guest's arguments; a stream error reaches the guest as the
/// `stream-error` it expects.
macro_rules! bounded_stream_method {
    ($instance:expr, $name:literal, ($($arg:ident: $ty:ty),*), |$table:ident| $call:expr) => {
        $instance.func_wrap($name, |mut store: StoreContextMut<'_, HostState>, ($($arg,)*): ($($ty,)*)| {
            match until_stopped(&mut store, async move |$table: &mut ResourceTable| $call.await)? {
                Ok(value) => Ok((Ok(value),)),
                Err(e) => Ok((Err(store.data_mut().table.convert_stream_error(e)?),)),
            }
        })?;
    };
}

/// How often a parked call looks at the cancel flag.
const CANCEL_CHECK: Duration = Duration::from_millis(50);

/// Redefines `poll` and `pollable.block` after WASI was linked.
pub(crate) fn bound_waits(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    let mut poll = linker.instance(POLL_INSTANCE)?;
    poll.func_wrap("poll", |mut store, (pollables,): (Vec<Resource<DynPollable>>,)| {
        until_stopped(&mut store, async move |table: &mut ResourceTable| table.poll(pollables).await)?.map(|ready| (ready,))
    })?;
    poll.func_wrap("[method]pollable.block", |mut store, (pollable,): (Resource<DynPollable>,)| {
        until_stopped(&mut store, async move |table: &mut ResourceTable| table.block(pollable).await)?
    })?;
    let mut streams = linker.instance(STREAMS_INSTANCE)?;
    bounded_stream_method!(
        streams,
        "[method]output-stream.blocking-write-and-flush",
        (stream: Resource<DynOutputStream>, bytes: Vec<u8>),
        |table| HostOutputStream::blocking_write_and_flush(table, stream, bytes)
    );
    bounded_stream_method!(
        streams,
        "[method]output-stream.blocking-write-zeroes-and-flush",
        (stream: Resource<DynOutputStream>, len: u64),
        |table| HostOutputStream::blocking_write_zeroes_and_flush(table, stream, len)
    );
    bounded_stream_method!(
        streams,
        "[method]output-stream.blocking-flush",
        (stream: Resource<DynOutputStream>),
        |table| HostOutputStream::blocking_flush(table, stream)
    );
    bounded_stream_method!(
        streams,
        "[method]output-stream.blocking-splice",
        (dest: Resource<DynOutputStream>, src: Resource<DynInputStream>, len: u64),
        |table| HostOutputStream::blocking_splice(table, dest, src, len)
    );
    bounded_stream_method!(
        streams,
        "[method]input-stream.blocking-read",
        (stream: Resource<DynInputStream>, len: u64),
        |table| HostInputStream::blocking_read(table, stream, len)
    );
    bounded_stream_method!(
        streams,
        "[method]input-stream.blocking-skip",
        (stream: Resource<DynInputStream>, len: u64),
        |table| HostInputStream::blocking_skip(table, stream, len)
    );
    linker.allow_shadowing(false);
    Ok(())
}

/// Resolves when the deadline passes or the action is cancelled, with the
/// trap that ends the call; `explain_trap` words it for the operator.
async fn stopped(deadline: Instant, cancel: &crate::Cancel) -> wasmtime::Error {
    loop {
        let now = Instant::now();
        if cancel.is_cancelled() || now >= deadline {
            return wasmtime::Trap::Interrupt.into();
        }
        tokio::time::sleep(CANCEL_CHECK.min(deadline - now)).await;
    }
}
