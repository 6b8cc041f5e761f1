//! `rackseed serve`: starts the async runtime, turns SIGTERM and SIGINT into the
//! cancellation token and hands over to [`crate::serve::serve`].

use super::args::ConfigArgs;
use anyhow::{Context, Result};
use std::process::ExitCode;

/// Runs the appliance until a signal asks it to stop or a service dies.
pub fn run(args: &ConfigArgs) -> Result<ExitCode> {
    let config = args.load()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    rt.block_on(async move {
        let cancel = tokio_util::sync::CancellationToken::new();
        let c = cancel.clone();
        tokio::spawn(async move {
            shutdown_signal().await;
            // The target the line had before the command line became a module tree.
            tracing::info!(target: "rackseed::cli", "shutting down");
            c.cancel();
        });
        crate::serve::serve(config, cancel).await
    })?;
    Ok(ExitCode::SUCCESS)
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        std::future::pending::<()>().await;
        return;
    };
    tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
}
