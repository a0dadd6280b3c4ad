//! `sluice-sandbox`: the launcher of confined programs as a binary of its
//! own, for embedders of the runtime whose executable cannot host it (and
//! for the runtime's tests). `sluice` and `sluice-agent` re-execute
//! themselves instead.

fn main() {
    sluice_runtime::sandbox::run_launcher_if_asked();
    eprintln!(
        "sluice-sandbox: starts a granted program confined; it is run by the sluice runtime as \
         `sluice-sandbox {} SPEC -- PROGRAM ARGS...`, not by hand",
        sluice_runtime::sandbox::SUPERVISE_ARG
    );
    std::process::exit(2);
}
