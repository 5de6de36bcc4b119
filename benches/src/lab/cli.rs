//! The `lab` command line: see [`help::USAGE`].
//!
//! Without `--scenario`, the built-in suite runs. It prints a progress line per scenario cell
//! on stderr and a table per cell on stdout, and exits with 1 when a seawall verdict fails
//! that is not a known failure of its scenario, 2 when the command line or a file is wrong.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::Instant;

use crate::lab::help;
use crate::lab::report::{self, Report, ScenarioReport, StackReport};
use crate::lab::scenario::Scenario;
use crate::lab::stacks::{PeerSettings, SeawallSettings, Settings, StackKind};
use crate::lab::svg;

/// The default master seed.
pub const DEFAULT_SEED: u64 = 1;

/// What the command line asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// Built-in scenario names or files; empty for the built-in suite.
    pub scenarios: Vec<String>,
    /// Stacks to run.
    pub stacks: Vec<StackKind>,
    /// The seawall stack's configuration file.
    pub settings: Option<PathBuf>,
    /// Settings files for single stacks.
    pub settings_for: Vec<(StackKind, PathBuf)>,
    /// Where to write JSON.
    pub json: Option<PathBuf>,
    /// Where to write SVGs.
    pub svg: Option<PathBuf>,
    /// The master seed.
    pub seed: u64,
    /// Shortened scenarios.
    pub quick: bool,
    /// Every column.
    pub wide: bool,
    /// Runs at once.
    pub jobs: Option<usize>,
    /// What to print instead of running.
    pub help: Option<Help>,
}

/// What to print instead of running.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Help {
    /// The usage and the columns.
    Usage,
    /// The scenario format.
    Scenario,
    /// The built-in scenarios.
    List,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            scenarios: Vec::new(),
            stacks: StackKind::ALL.to_vec(),
            settings: None,
            settings_for: Vec::new(),
            json: None,
            svg: None,
            seed: DEFAULT_SEED,
            quick: false,
            wide: false,
            jobs: None,
            help: None,
        }
    }
}

/// Parses the arguments after the program name.
pub fn parse_args(args: impl IntoIterator<Item = String>) -> Result<Options, String> {
    let mut options = Options::default();
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().ok_or_else(|| format!("{name} needs a value"));
        match arg.as_str() {
            "--scenario" => options.scenarios.push(value("--scenario")?),
            "--stack" => {
                options.stacks = value("--stack")?
                    .split(',')
                    .map(|name| stack(name.trim()))
                    .collect::<Result<_, _>>()?;
            }
            "--settings" => options.settings = Some(value("--settings")?.into()),
            "--settings-for" => {
                let kind = stack(&value("--settings-for")?)?;
                if matches!(kind, StackKind::Unprotected | StackKind::Naive) {
                    return Err(format!("--settings-for: `{kind}` takes no settings"));
                }
                let file = value("--settings-for STACK")?;
                options.settings_for.push((kind, file.into()));
            }
            "--json" => options.json = Some(value("--json")?.into()),
            "--svg" => options.svg = Some(value("--svg")?.into()),
            "--seed" => {
                let seed = value("--seed")?;
                options.seed = seed
                    .parse()
                    .map_err(|_| format!("--seed takes a number, not `{seed}`"))?;
            }
            "--jobs" => {
                let jobs = value("--jobs")?;
                options.jobs = Some(
                    jobs.parse()
                        .ok()
                        .filter(|&n| n > 0)
                        .ok_or_else(|| format!("--jobs takes a number above 0, not `{jobs}`"))?,
                );
            }
            "--quick" => options.quick = true,
            "--wide" => options.wide = true,
            "--list" => options.help = Some(Help::List),
            "-h" | "--help" => options.help = Some(Help::Usage),
            "--help-scenario" => options.help = Some(Help::Scenario),
            other => return Err(format!("unknown argument `{other}`")),
        }
    }
    Ok(options)
}

fn stack(name: &str) -> Result<StackKind, String> {
    StackKind::parse(name).ok_or_else(|| {
        format!(
            "unknown stack `{name}`: one of unprotected, naive, tower, tower-resilience, seawall"
        )
    })
}

fn read(path: &PathBuf) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))
}

/// Reads the scenarios `options` names (built-in names or files; the built-in suite when
/// none), shortened with `--quick`, one per cell of their matrices.
pub fn load(options: &Options) -> Result<Vec<Scenario>, String> {
    let scenarios = if options.scenarios.is_empty() {
        Scenario::built_in()
    } else {
        options
            .scenarios
            .iter()
            .map(|name| {
                if let Some(s) = Scenario::by_name(name) {
                    return Ok(s);
                }
                let path = PathBuf::from(name);
                if !path.exists() {
                    let names: Vec<String> =
                        Scenario::built_in().into_iter().map(|s| s.id).collect();
                    return Err(format!(
                        "`{name}` is neither a built-in scenario ({}) nor a file",
                        names.join(", ")
                    ));
                }
                let text = read(&path)?;
                Scenario::parse(&path.display().to_string(), &text).map_err(|e| e.to_string())
            })
            .collect::<Result<_, _>>()?
    };
    Ok(scenarios
        .iter()
        .flat_map(Scenario::cells)
        .map(|s| if options.quick { s.quick() } else { s })
        .collect())
}

/// The settings `options` asks for.
pub fn settings(options: &Options) -> Result<Settings, String> {
    let mut seawall = match &options.settings {
        Some(path) => SeawallSettings::from_toml(&read(path)?)
            .map_err(|e| format!("{}: {e}", path.display()))?,
        None => SeawallSettings::default(),
    };
    for (kind, path) in &options.settings_for {
        if *kind == StackKind::Seawall {
            seawall = SeawallSettings::from_toml(&read(path)?)
                .map_err(|e| format!("{}: {e}", path.display()))?;
        }
    }
    let mut settings = Settings::like(seawall);
    for (kind, path) in &options.settings_for {
        let peer = || {
            PeerSettings::from_toml(&read(path)?).map_err(|e| format!("{}: {e}", path.display()))
        };
        match kind {
            StackKind::Tower => settings.tower = peer()?,
            StackKind::TowerResilience => settings.tower_resilience = peer()?,
            _ => {}
        }
    }
    Ok(settings)
}

/// Runs the lab with `args` (after the program name) and returns the exit status.
pub fn main(args: impl IntoIterator<Item = String>) -> i32 {
    let options = match parse_args(args) {
        Ok(options) => options,
        Err(message) => {
            eprintln!("lab: {message}");
            eprintln!("{}", help::USAGE);
            return 2;
        }
    };
    match options.help {
        Some(Help::Usage) => {
            print!("{}", help::help());
            return 0;
        }
        Some(Help::Scenario) => {
            print!("{}", help::SCENARIO);
            return 0;
        }
        Some(Help::List) => {
            for s in Scenario::built_in() {
                let cells = s.cells().len();
                println!("{:<22} {:>2} cell(s)  {}", s.id, cells, s.description);
            }
            return 0;
        }
        None => {}
    }
    let (scenarios, settings) = match load(&options).and_then(|s| Ok((s, settings(&options)?))) {
        Ok(loaded) => loaded,
        Err(message) => {
            eprintln!("lab: {message}");
            return 2;
        }
    };
    let report = run(&scenarios, &options, &settings);
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
            let path = dir.join(format!("{}.svg", svg::file_stem(scenario)));
            if let Err(e) = std::fs::write(&path, svg::timeline(scenario)) {
                eprintln!("lab: {}: {e}", path.display());
                return 2;
            }
        }
    }
    println!("\n{}", closing(&report));
    i32::from(!report.passed)
}

/// The closing lines: the seawall stack's failures, known and not.
pub fn closing(report: &Report) -> String {
    let mut out = String::new();
    let list = |pick: &dyn Fn(&ScenarioReport) -> Vec<String>| -> Vec<String> {
        report
            .scenarios
            .iter()
            .filter_map(|s| {
                let names = pick(s);
                (!names.is_empty()).then(|| format!("  {}: {}", s.name, names.join(", ")))
            })
            .collect()
    };
    let names = |vs: Vec<&crate::lab::metrics::Verdict>| -> Vec<String> {
        vs.iter().map(|v| v.threshold.to_owned()).collect()
    };
    let unexpected = list(&|s| names(s.seawall_unexpected()));
    let known = list(&|s| names(s.seawall_known()));
    if unexpected.is_empty() {
        out.push_str("seawall: every verdict passed");
        if !known.is_empty() {
            out.push_str(" but the known failures");
        }
        out.push('\n');
    } else {
        out.push_str("seawall: verdicts FAILED in\n");
        for line in &unexpected {
            out.push_str(line);
            out.push('\n');
        }
    }
    if !known.is_empty() {
        out.push_str("seawall: known failures (FAIL*, not failing the run) in\n");
        for line in &known {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

/// Runs every scenario cell against every chosen stack, the runs spread over threads, and
/// prints each cell's table in order as soon as its runs are done.
pub fn run(scenarios: &[Scenario], options: &Options, settings: &Settings) -> Report {
    let stacks = &options.stacks;
    let jobs: Vec<(usize, usize)> = (0..scenarios.len())
        .flat_map(|c| (0..stacks.len()).map(move |k| (c, k)))
        .collect();
    let threads = options
        .jobs
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .min(jobs.len())
        .max(1);
    let next = AtomicUsize::new(0);
    let (tx, rx) = mpsc::channel::<(usize, StackReport)>();
    let mut reports = Vec::with_capacity(scenarios.len());
    let started = Instant::now();
    std::thread::scope(|scope| {
        for _ in 0..threads {
            let tx = tx.clone();
            let (next, jobs) = (&next, &jobs);
            scope.spawn(move || {
                loop {
                    let j = next.fetch_add(1, Ordering::Relaxed);
                    let Some(&(c, k)) = jobs.get(j) else { break };
                    let r = report::stack_report(&scenarios[c], stacks[k], settings, options.seed);
                    if tx.send((j, r)).is_err() {
                        break;
                    }
                }
            });
        }
        drop(tx);
        let mut slots: Vec<Option<StackReport>> = vec![None; jobs.len()];
        let mut printed = 0;
        for (j, r) in rx {
            slots[j] = Some(r);
            while printed < scenarios.len() {
                let range = printed * stacks.len()..(printed + 1) * stacks.len();
                if slots[range.clone()].iter().any(Option::is_none) {
                    break;
                }
                let cell = &scenarios[printed];
                let stack_reports = slots[range]
                    .iter_mut()
                    .map(|s| s.take().expect("done"))
                    .collect();
                let report = report::scenario_report(cell, stack_reports);
                eprintln!(
                    "[{}/{}] {}: {} stacks x {:.0} s, {} client(s) ({:.1} s elapsed)",
                    printed + 1,
                    scenarios.len(),
                    report.name,
                    stacks.len(),
                    cell.duration.as_secs_f64(),
                    cell.workload.clients,
                    started.elapsed().as_secs_f64()
                );
                print!("{}", report::table(&report, options.seed, options.wide));
                reports.push(report);
                printed += 1;
            }
        }
    });
    Report::new(options.seed, options.quick, settings, reports)
}
