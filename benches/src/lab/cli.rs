//! The `lab` command line.
//!
//! ```text
//! lab [--scenario FILE]... [--stack a,b,c] [--json FILE] [--svg DIR] [--seed N] [--quick]
//! ```
//!
//! Without `--scenario`, the built-in suite runs. It prints a progress line per scenario on
//! stderr and a table per scenario on stdout, and exits with 1 when a seawall verdict fails, 2
//! when the command line or a scenario file is wrong.

use std::path::PathBuf;

use crate::lab::report::{self, Report, SCHEMA_VERSION, SettingsReport};
use crate::lab::scenario::Scenario;
use crate::lab::stacks::{Settings, StackKind};
use crate::lab::svg;

/// The default master seed.
pub const DEFAULT_SEED: u64 = 1;

const USAGE: &str = "\
usage: lab [--scenario FILE]... [--stack a,b,c] [--json FILE] [--svg DIR] [--seed N] [--quick]

  --scenario FILE  run this scenario file (repeatable); default: the built-in suite
  --stack LIST     stacks to run, comma-separated, from:
                   unprotected,naive,tower,tower-resilience,seawall (default: all)
  --json FILE      write the report as JSON
  --svg DIR        write one SVG timeline per scenario into DIR
  --seed N         the master seed of every random stream (default 1)
  --quick          shorten every scenario to 5 s before its fault and 10 s after (for CI)
exit status: 0 when every seawall verdict passes, 1 when one fails, 2 on a usage or file error";

/// What a reader of the tower-resilience rows needs to know.
pub const TOWER_RESILIENCE_NOTE: &str = "\
note: tower-resilience 0.13's count-based breaker judges the failure rate of every call since its
      last state change (the window never slides), so after a healthy start it rarely opens; and
      it times its open state with std::time::Instant, which the lab's paused clock does not move.";

/// What the command line asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// Scenario files; empty for the built-in suite.
    pub scenarios: Vec<PathBuf>,
    /// Stacks to run.
    pub stacks: Vec<StackKind>,
    /// Where to write JSON.
    pub json: Option<PathBuf>,
    /// Where to write SVGs.
    pub svg: Option<PathBuf>,
    /// The master seed.
    pub seed: u64,
    /// Shortened scenarios.
    pub quick: bool,
}

/// Parses the arguments after the program name.
pub fn parse_args(args: impl IntoIterator<Item = String>) -> Result<Options, String> {
    let mut options = Options {
        scenarios: Vec::new(),
        stacks: StackKind::ALL.to_vec(),
        json: None,
        svg: None,
        seed: DEFAULT_SEED,
        quick: false,
    };
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().ok_or_else(|| format!("{name} needs a value"));
        match arg.as_str() {
            "--scenario" => options.scenarios.push(value("--scenario")?.into()),
            "--stack" => {
                options.stacks = value("--stack")?
                    .split(',')
                    .map(|name| {
                        StackKind::parse(name.trim())
                            .ok_or_else(|| format!("unknown stack `{name}`"))
                    })
                    .collect::<Result<_, _>>()?;
            }
            "--json" => options.json = Some(value("--json")?.into()),
            "--svg" => options.svg = Some(value("--svg")?.into()),
            "--seed" => {
                let seed = value("--seed")?;
                options.seed = seed
                    .parse()
                    .map_err(|_| format!("--seed takes a number, not `{seed}`"))?;
            }
            "--quick" => options.quick = true,
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown argument `{other}`")),
        }
    }
    Ok(options)
}

/// Reads the scenarios `options` names (or the built-in suite), shortened with `--quick`.
pub fn load(options: &Options) -> Result<Vec<Scenario>, String> {
    let scenarios = if options.scenarios.is_empty() {
        Scenario::built_in()
    } else {
        options
            .scenarios
            .iter()
            .map(|path| {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| format!("{}: {e}", path.display()))?;
                Scenario::parse(&path.display().to_string(), &text).map_err(|e| e.to_string())
            })
            .collect::<Result<_, _>>()?
    };
    Ok(if options.quick {
        scenarios.iter().map(Scenario::quick).collect()
    } else {
        scenarios
    })
}

/// Runs the lab with `args` (after the program name) and returns the exit status.
pub fn main(args: impl IntoIterator<Item = String>) -> i32 {
    let options = match parse_args(args) {
        Ok(options) => options,
        Err(message) => {
            if !message.is_empty() {
                eprintln!("lab: {message}");
            }
            eprintln!("{USAGE}");
            return if message.is_empty() { 0 } else { 2 };
        }
    };
    let scenarios = match load(&options) {
        Ok(scenarios) => scenarios,
        Err(message) => {
            eprintln!("lab: {message}");
            return 2;
        }
    };
    let report = run(&scenarios, &options);
    if let Some(path) = &options.json
        && let Err(e) = std::fs::write(path, report::to_json(&report))
    {
        eprintln!("lab: {}: {e}", path.display());
        return 2;
    }
    if let Some(dir) = &options.svg {
        if let Err(e) = std::fs::create_dir_all(dir) {
            eprintln!("lab: {}: {e}", dir.display());
            return 2;
        }
        for scenario in &report.scenarios {
            let path = dir.join(format!("{}.svg", scenario.id));
            if let Err(e) = std::fs::write(&path, svg::timeline(scenario)) {
                eprintln!("lab: {}: {e}", path.display());
                return 2;
            }
        }
    }
    if options.stacks.contains(&StackKind::TowerResilience) {
        println!("\n{TOWER_RESILIENCE_NOTE}");
    }
    if options.stacks.contains(&StackKind::Seawall) {
        let failed: Vec<&str> = report
            .scenarios
            .iter()
            .filter(|s| !s.seawall_passed())
            .map(|s| s.id.as_str())
            .collect();
        if failed.is_empty() {
            println!("\nseawall: every verdict passed");
        } else {
            println!("\nseawall: verdicts failed in {}", failed.join(", "));
        }
    }
    i32::from(!report.passed)
}

/// Runs every scenario against every chosen stack, printing as it goes.
pub fn run(scenarios: &[Scenario], options: &Options) -> Report {
    let settings = Settings::default();
    let mut reports = Vec::new();
    for (i, scenario) in scenarios.iter().enumerate() {
        eprintln!(
            "[{}/{}] {}: {} stacks x {:.0} s at {} req/s",
            i + 1,
            scenarios.len(),
            scenario.id,
            options.stacks.len(),
            scenario.duration.as_secs_f64(),
            scenario.workload.rate
        );
        let report = report::scenario_report(scenario, &options.stacks, &settings, options.seed);
        print!("{}", report::table(&report, options.seed));
        reports.push(report);
    }
    Report {
        schema_version: SCHEMA_VERSION,
        seed: options.seed,
        quick: options.quick,
        settings: SettingsReport::from(&settings),
        passed: reports.iter().all(|r| r.seawall_passed()),
        scenarios: reports,
    }
}
