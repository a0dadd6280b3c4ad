//! `sluice completion` and `sluice man`: shell completion scripts and man
//! pages made from the command definition itself ([`super::command`]), so
//! that they never drift from the flags.

use super::Failure;
use clap::{Args, ValueEnum};
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct CompletionArgs {
    /// The shell to complete for.
    #[arg(value_enum)]
    pub shell: Shell,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum Shell {
    Bash,
    Zsh,
    Fish,
}

#[derive(Args, Debug)]
pub struct ManArgs {
    /// The directory to write the pages to (sluice.1, sluice-controller.1,
    /// one per command); created if missing.
    #[arg(long, value_name = "DIR")]
    pub to: PathBuf,
}

/// Prints the completion script of `shell` on stdout.
pub fn completion(args: CompletionArgs) -> Result<i32, Failure> {
    let shell = match args.shell {
        Shell::Bash => clap_complete::Shell::Bash,
        Shell::Zsh => clap_complete::Shell::Zsh,
        Shell::Fish => clap_complete::Shell::Fish,
    };
    let mut cmd = super::command();
    clap_complete::generate(shell, &mut cmd, "sluice", &mut std::io::stdout());
    Ok(0)
}

/// Writes a man page per command, section 1, into `--to`.
pub fn man(args: ManArgs) -> Result<i32, Failure> {
    std::fs::create_dir_all(&args.to).map_err(|e| Failure::new(1, format!("creating {}: {e}", args.to.display())))?;
    clap_mangen::generate_to(super::command(), &args.to)
        .map_err(|e| Failure::new(1, format!("writing man pages to {}: {e}", args.to.display())))?;
    let count = std::fs::read_dir(&args.to).map(|entries| entries.count()).unwrap_or(0);
    eprintln!("{count} man pages in {}", args.to.display());
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn man_pages_cover_every_command_and_name_the_environment() {
        let dir = tempfile::tempdir().unwrap();
        man(ManArgs { to: dir.path().to_path_buf() }).unwrap();
        let controller = std::fs::read_to_string(dir.path().join("sluice-controller.1")).unwrap();
        assert!(controller.contains("SLUICE_DATA_DIR"), "the controller's page names its variables");
        assert!(controller.contains("check\\-config"));
        assert!(dir.path().join("sluice-pipeline-create.1").exists());
        assert!(dir.path().join("sluice.1").exists());
    }
}
