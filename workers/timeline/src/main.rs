//! `timeline`: the worker binary. Wiring only; see the library for the behaviour.

use std::process::ExitCode;

use cdc_runtime::WorkerConfig;
use timeline::{FAMILY, Settings, Timeline};

fn main() -> ExitCode {
    cdc_runtime::cli::main_with(
        FAMILY,
        |config: WorkerConfig, settings: Settings| async move {
            let family = cdc_topics::by_name(FAMILY)?
                .ok_or_else(|| anyhow::anyhow!("no topics/families/{FAMILY}.toml"))?;
            Timeline::open(&config, &settings, &config.group_id(&family)).await
        },
    )
}
