//! The action's deadline around host calls that wait.
//!
//! Epoch interruption stops running wasm, but not a plugin parked in a host
//! call: `std::thread::sleep` in a guest is `wasi:io/poll`'s
//! `pollable.block` on a clock, and a plugin waiting for a network answer
//! polls too. Those two functions are replaced here by versions that give
//! up at the store's deadline or when the action is cancelled, trapping as
//! an interrupt does, so that every call of a plugin ends by its deadline.

use crate::host::HostState;
use std::time::{Duration, Instant};
use wasmtime::component::{Linker, Resource};
use wasmtime_wasi_io::bindings::wasi::io::poll::{Host as _, HostPollable as _};
use wasmtime_wasi_io::poll::DynPollable;

/// The `wasi:io/poll` instance wasmtime-wasi 48 defines; components built
/// against any earlier 0.2 release link to it.
const POLL_INSTANCE: &str = "wasi:io/poll@0.2.12";

/// How often a parked call looks at the cancel flag.
const CANCEL_CHECK: Duration = Duration::from_millis(50);

/// Redefines `poll` and `pollable.block` after WASI was linked.
pub(crate) fn bound_waits(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    let mut poll = linker.instance(POLL_INSTANCE)?;
    poll.func_wrap("poll", |mut store, (pollables,): (Vec<Resource<DynPollable>>,)| {
        let (deadline, cancel) = (store.data().deadline, store.data().cancel.clone());
        let table = &mut store.data_mut().table;
        let result = wasmtime_wasi::runtime::in_tokio(async {
            tokio::select! {
                ready = table.poll(pollables) => ready.map(|list| (list,)),
                stop = stopped(deadline, &cancel) => Err(stop),
            }
        });
        store.data_mut().log_http_refusals();
        result
    })?;
    poll.func_wrap("[method]pollable.block", |mut store, (pollable,): (Resource<DynPollable>,)| {
        let (deadline, cancel) = (store.data().deadline, store.data().cancel.clone());
        let table = &mut store.data_mut().table;
        let result = wasmtime_wasi::runtime::in_tokio(async {
            tokio::select! {
                ready = table.block(pollable) => ready,
                stop = stopped(deadline, &cancel) => Err(stop),
            }
        });
        store.data_mut().log_http_refusals();
        result
    })?;
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
