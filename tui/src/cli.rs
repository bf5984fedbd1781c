//! The command line: arguments (clap derive) and one function per subcommand. `main.rs` only
//! parses and calls [`run`].

use std::fs::File;
use std::io::{self, BufWriter, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{ArgGroup, Parser, Subcommand};
use stallscope_wire::discovery;
use stallscope_wire::recording::{RecordingOptions, RecordingReader, RecordingWriter};

use crate::conn::{ConnectOptions, Connection};
use crate::flame::{Flame, FlameOptions, FlameSvg};
use crate::record::{self, Ended};
use crate::target::{self, Target};
use crate::timefmt::{self, short_utc, TimeSpec};
use crate::{list, report};
use stallscope_wire::model::Summary;

/// Find what blocks your Tokio event loop and which tasks never finish.
///
/// stallscope talks to the stallscope probe linked into a Tokio service: it shows it live in a
/// terminal UI, lists the probes on this machine, records what they publish, and turns
/// recordings into reports and flame graphs of stalled time. With no subcommand it attaches to
/// the only probe running on this machine (or offers a choice), and takes attach's options.
#[derive(Debug, Parser)]
#[command(name = "stallscope", version, max_term_width = 100, args_conflicts_with_subcommands = true)]
pub struct Cli {
    /// What to do (attach when left out).
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Options of the live UI, for `stallscope` with no subcommand.
    #[command(flatten)]
    pub attach: AttachOptions,
}

/// Options of the live UI: `stallscope attach` and `stallscope` alone.
#[derive(Debug, Default, clap::Args)]
pub struct AttachOptions {
    /// Also record everything received into this file.
    #[arg(long, value_name = "FILE")]
    pub record: Option<PathBuf>,
    /// Where `e` in the Flame view writes SVG files (default: the current directory).
    #[arg(long, value_name = "DIR")]
    pub export_dir: Option<PathBuf>,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// The live terminal UI on a probe.
    ///
    /// TARGET is a pid, a socket path or tcp://HOST:PORT. Without it, the only probe running on
    /// this machine is used, or you choose among them. A lost probe is retried with backoff.
    Attach {
        /// The probe: a pid, a socket path, or tcp://HOST:PORT.
        #[arg(value_name = "TARGET")]
        target: Option<Target>,
        /// What to do besides showing it.
        #[command(flatten)]
        options: AttachOptions,
    },
    /// The terminal UI on a recording, with a timeline: play, pause, speed and seek.
    Replay {
        /// The recording.
        file: PathBuf,
        /// Where `e` in the Flame view writes SVG files (default: the current directory).
        #[arg(long, value_name = "DIR")]
        export_dir: Option<PathBuf>,
    },
    /// List the probes running on this machine.
    List {
        /// Also show stale sockets left by processes that exited.
        #[arg(long)]
        all: bool,
    },
    /// Record what a probe publishes into a file, without a UI.
    ///
    /// TARGET is a pid, a socket path or tcp://HOST:PORT. Without it, the only probe running on
    /// this machine is used. Ctrl-C stops early and leaves a valid file.
    Record {
        /// The probe: a pid, a socket path, or tcp://HOST:PORT.
        #[arg(value_name = "TARGET")]
        target: Option<Target>,
        /// How long to record (10s, 500ms, 2m); until Ctrl-C when left out.
        #[arg(short, long, value_name = "D", value_parser = timefmt::parse_duration)]
        duration: Option<Duration>,
        /// The recording file to write.
        #[arg(short, long, value_name = "FILE")]
        output: PathBuf,
    },
    /// Summarize a recording: stalls with their top frames, leak suspects, pools, lag, polls.
    Report {
        /// The recording.
        file: PathBuf,
        /// Print the stable JSON report (docs/report-json.md) instead of text.
        #[arg(long)]
        json: bool,
        /// Stalls and functions listed in the text report (the JSON lists all).
        #[arg(long, value_name = "N", default_value_t = 20)]
        top: usize,
    },
    /// Draw a flame graph of stalled time from a recording.
    ///
    /// Every stack sample taken during a stall counts once. --since and --until take a time
    /// since the recording started (5s, 1m 30s) or an RFC 3339 time (2025-11-21T04:40:05Z); a
    /// stall is kept when it overlaps the range.
    #[command(group(ArgGroup::new("out").required(true).multiple(true).args(["svg", "folded"])))]
    Export {
        /// The recording.
        file: PathBuf,
        /// Write the flame graph as SVG here ('-' for standard output).
        #[arg(long, value_name = "OUT")]
        svg: Option<PathBuf>,
        /// Write the folded stacks (inferno/FlameGraph input) here ('-' for standard output).
        #[arg(long, value_name = "OUT")]
        folded: Option<PathBuf>,
        /// Keep stalls that end at or after this time.
        #[arg(long, value_name = "T")]
        since: Option<TimeSpec>,
        /// Keep stalls that start at or before this time.
        #[arg(long, value_name = "T")]
        until: Option<TimeSpec>,
        /// Image width in pixels.
        #[arg(long, value_name = "PX")]
        width: Option<usize>,
    },
    /// Run the bundled demo service with the probe in a child process and attach to it.
    ///
    /// The demo blocks its workers, leaks tasks and saturates a pool; the terminal UI shows it.
    /// With --headless (or when the output is not a terminal) there is no UI: it records for
    /// --duration and prints the report.
    Demo {
        /// No UI: record, then print the report.
        #[arg(long)]
        headless: bool,
        /// How long to run (10s, 1m); until Ctrl-C when left out (10s with --headless).
        #[arg(short, long, value_name = "D", value_parser = timefmt::parse_duration)]
        duration: Option<Duration>,
        /// Keep the recording in this file.
        #[arg(long, value_name = "FILE")]
        record: Option<PathBuf>,
    },
    /// The demo service itself, run by `stallscope demo` in a child process.
    #[command(name = "__demo-service", hide = true)]
    DemoService {
        /// Seconds to run before exiting on its own.
        #[arg(long, default_value_t = 600)]
        secs: u64,
    },
}

/// Runs a parsed command line.
pub fn run(cli: Cli) -> Result<()> {
    let Some(command) = cli.command else {
        return cmd_attach(None, cli.attach);
    };
    match command {
        Command::Attach { target, options } => cmd_attach(target, options),
        Command::Replay { file, export_dir } => cmd_replay(&file, export_dir),
        Command::List { all } => cmd_list(all),
        Command::Record { target, duration, output } => cmd_record(target.as_ref(), duration, &output),
        Command::Report { file, json, top } => cmd_report(&file, json, top),
        Command::Export { file, svg, folded, since, until, width } => {
            cmd_export(&file, svg.as_deref(), folded.as_deref(), since, until, width)
        }
        Command::Demo { headless, duration, record } => cmd_demo(headless, duration, record),
        Command::DemoService { secs } => cmd_demo_service(secs),
    }
}

#[cfg(feature = "demo")]
fn cmd_demo(headless: bool, duration: Option<Duration>, record: Option<PathBuf>) -> Result<()> {
    let mut child = crate::demo::spawn_service().context("while starting the demo service")?;
    let result = (|| -> Result<()> {
        let endpoint = target::Endpoint::Unix(child.socket.clone());
        let mut conn = Connection::open(&endpoint, &ConnectOptions::default())?;
        let stop = Arc::new(AtomicBool::new(false));
        for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
            signal_hook::flag::register_conditional_shutdown(sig, 1, Arc::clone(&stop))
                .and_then(|_| signal_hook::flag::register(sig, Arc::clone(&stop)))
                .context("while installing the Ctrl-C handler")?;
        }
        if !headless && io::stdout().is_terminal() && io::stdin().is_terminal() {
            drop(conn);
            let options = crate::ui::RunOptions { export_dir: None, record: record.clone() };
            return crate::ui::attach(Some(Target::Socket(child.socket.clone())), discovery::socket_dir(), options);
        }
        if !headless {
            eprintln!(
                "demo service running as pid {}; attached through {} (not a terminal: printing alerts). Ctrl-C to stop.",
                child.pid,
                child.socket.display()
            );
            return crate::demo::print_live(&mut conn, duration, &stop);
        }
        let duration = duration.unwrap_or(Duration::from_secs(10));
        let (path, temporary) = match &record {
            Some(p) => (p.clone(), false),
            None => (std::env::temp_dir().join(format!("stallscope-demo-{}.stsc", std::process::id())), true),
        };
        let header = record::header_for(&conn);
        let mut writer = RecordingWriter::create(&path, &header, RecordingOptions::default())
            .with_context(|| format!("while creating the recording {}", path.display()))?;
        eprintln!(
            "demo service running as pid {}; recording {} into {}",
            child.pid,
            humantime::format_duration(duration),
            path.display()
        );
        let outcome = record::record(&mut conn, &mut writer, Some(duration), &stop)?;
        writer.into_inner().with_context(|| format!("while flushing the recording {}", path.display()))?;
        eprint!("{}", outcome.summary(&format!("the demo (pid {})", child.pid), &path.display().to_string()));
        let r = cmd_report(&path, false, 20);
        if temporary {
            let _ = std::fs::remove_file(&path);
        }
        r
    })();
    child.stop();
    result
}

#[cfg(not(feature = "demo"))]
fn cmd_demo(_: bool, _: Option<Duration>, _: Option<PathBuf>) -> Result<()> {
    bail!("this stallscope was built without the `demo` feature")
}

#[cfg(feature = "demo")]
fn cmd_demo_service(secs: u64) -> Result<()> {
    crate::demo::run_service(Duration::from_secs(secs))
}

#[cfg(not(feature = "demo"))]
fn cmd_demo_service(_: u64) -> Result<()> {
    bail!("this stallscope was built without the `demo` feature")
}

/// Prints an error for the user: each cause once. A cause whose text its context already
/// quotes (a wire error that prints its I/O error, then has it as its source) is left out.
pub fn error_text(e: &anyhow::Error) -> String {
    let mut out = String::new();
    let mut last = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if !last.is_empty() && last.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
        last = text;
    }
    out
}

fn cmd_attach(target: Option<Target>, options: AttachOptions) -> Result<()> {
    let dir = discovery::socket_dir();
    // A pid with no process behind it can never answer: say so rather than retry for ever.
    if let Some(t) = &target {
        if let Err(e) = t.resolve(&dir) {
            if e.process_gone() {
                return Err(e.into());
            }
        }
    }
    if !io::stdout().is_terminal() || !io::stdin().is_terminal() {
        bail!("the live UI needs a terminal; to capture without one use `stallscope record -o FILE`");
    }
    // With no target: the only probe, a picker among several, or a wait for the first.
    let AttachOptions { record, export_dir } = options;
    crate::ui::attach(target, dir, crate::ui::RunOptions { export_dir, record })
}

fn cmd_replay(file: &Path, export_dir: Option<PathBuf>) -> Result<()> {
    // The file first: with no terminal, suggesting `report` on a file that cannot be read helps
    // no one.
    let replay = crate::ui::open_replay(file)?;
    if !io::stdout().is_terminal() || !io::stdin().is_terminal() {
        bail!("replay needs a terminal; `stallscope report {}` prints a summary without one", file.display());
    }
    crate::ui::replay(replay, file, crate::ui::RunOptions { export_dir, record: None })
}

/// Writes to standard output; a closed pipe (`| head`) is not an error.
fn print_out(text: &str) -> Result<()> {
    let mut out = io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        other => other.context("while writing to standard output"),
    }
}

fn cmd_list(all: bool) -> Result<()> {
    let dir = discovery::socket_dir();
    print_out(&list::render(&list::probes(&dir), &dir, all))
}

fn cmd_record(target: Option<&Target>, duration: Option<Duration>, output: &Path) -> Result<()> {
    let endpoint = target::resolve_or_only(target, &discovery::socket_dir())?;
    let mut conn = Connection::open(&endpoint, &ConnectOptions::default())?;
    let process = format!("{} (pid {})", conn.process().name, conn.process().pid);

    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        // A second Ctrl-C kills at once; the first only sets the flag.
        signal_hook::flag::register_conditional_shutdown(sig, 1, Arc::clone(&stop))
            .and_then(|_| signal_hook::flag::register(sig, Arc::clone(&stop)))
            .context("while installing the Ctrl-C handler")?;
    }

    let header = record::header_for(&conn);
    let mut writer = RecordingWriter::create(output, &header, RecordingOptions::default())
        .with_context(|| format!("while creating the recording {}", output.display()))?;
    let how_long = duration.map(|d| format!("for {}", humantime::format_duration(d))).unwrap_or("until Ctrl-C".into());
    eprintln!("recording {process} from {endpoint} into {} {how_long}", output.display());

    let outcome = record::record(&mut conn, &mut writer, duration, &stop)
        .with_context(|| format!("while writing the recording {}", output.display()))?;
    writer.into_inner().with_context(|| format!("while flushing the recording {}", output.display()))?;
    print_out(&outcome.summary(&process, &output.display().to_string()))?;
    match outcome.ended {
        Ended::Duration | Ended::Interrupted => Ok(()),
        Ended::Full => {
            eprintln!("stallscope: the recording reached its size bound ({} bytes)", outcome.bytes);
            Ok(())
        }
        Ended::Connection(e) => Err(anyhow::Error::new(e)
            .context(format!("recording stopped early; {} holds what was received", output.display()))),
    }
}

/// Reads and folds a recording; damage is reported in the summary, not as an error.
pub fn load(path: &Path) -> Result<Summary> {
    let reader =
        RecordingReader::open(path).with_context(|| format!("while reading the recording {}", path.display()))?;
    Ok(Summary::from_recording(reader.read_all()))
}

fn cmd_report(file: &Path, json: bool, top: usize) -> Result<()> {
    let summary = load(file)?;
    if json {
        for line in summary.damage.lines() {
            eprintln!("stallscope: {}: {line}", file.display());
        }
        print_out(&report::json_string(&summary))
    } else {
        print_out(&report::text(&summary, &report::TextOptions::default().with_top(top)))
    }
}

fn open_out(path: &Path) -> Result<Box<dyn Write>> {
    if path == Path::new("-") {
        return Ok(Box::new(io::stdout().lock()));
    }
    let f = File::create(path).with_context(|| format!("while creating {}", path.display()))?;
    Ok(Box::new(BufWriter::new(f)))
}

fn cmd_export(
    file: &Path,
    svg: Option<&Path>,
    folded: Option<&Path>,
    since: Option<TimeSpec>,
    until: Option<TimeSpec>,
    width: Option<usize>,
) -> Result<()> {
    let summary = load(file)?;
    for line in summary.damage.lines() {
        eprintln!("stallscope: {}: {line}", file.display());
    }
    let start = summary.start_unix_ms();
    let from = since.map(|t| t.resolve(start)).unwrap_or(start);
    let to = until.map(|t| t.resolve(start)).unwrap_or_else(|| summary.end_unix_ms().max(from));
    if from > to {
        bail!("--since ({}) is after --until ({})", timefmt::rfc3339_ms(from), timefmt::rfc3339_ms(to));
    }
    // Stalls that blame code: a poll that only waited for a CPU shows whatever code was
    // preempted, which is not to blame (the UI's Flame view folds the same set).
    let stalls: Vec<_> =
        summary.stalls.iter().filter(|s| s.blames_code() && s.end_unix_ms() >= from && s.start_unix_ms <= to).collect();
    let flame = Flame::from_stalls(stalls.iter().copied());
    if flame.is_empty() {
        bail!(
            "no stack samples to draw: {} stall{} between {} and {} UTC{}",
            stalls.len(),
            if stalls.len() == 1 { "" } else { "s" },
            short_utc(from),
            short_utc(to),
            if stalls.is_empty() { "" } else { ", none with a stack sample (is stack sampling on in the probe?)" }
        );
    }
    let p = summary.process();
    let title = format!(
        "{} (pid {}): stalled time, {} – {} UTC, {} stall{}",
        if p.name.is_empty() { "unknown process" } else { &p.name },
        p.pid,
        short_utc(from),
        short_utc(to).split(' ').next_back().unwrap_or_default(),
        flame.stalls(),
        if flame.stalls() == 1 { "" } else { "s" }
    );
    if let Some(path) = folded {
        let mut w = open_out(path)?;
        w.write_all(flame.folded().as_bytes())
            .and_then(|()| w.flush())
            .with_context(|| format!("while writing {}", path.display()))?;
    }
    if let Some(path) = svg {
        let mut options = FlameOptions::titled(title);
        options.width = width;
        let mut w = open_out(path)?;
        flame
            .write_svg(&options, &mut w)
            .and_then(|()| w.flush())
            .with_context(|| format!("while writing {}", path.display()))?;
    }
    eprintln!(
        "stallscope: {} samples from {} stall{} ({} with samples)",
        flame.samples(),
        flame.stalls(),
        if flame.stalls() == 1 { "" } else { "s" },
        flame.stalls_with_samples()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn attach_options_work_with_and_without_the_subcommand() {
        let cli = Cli::try_parse_from(["stallscope", "--record", "r.stsc"]).unwrap();
        assert!(cli.command.is_none());
        assert_eq!(cli.attach.record, Some(PathBuf::from("r.stsc")));
        let cli =
            Cli::try_parse_from(["stallscope", "attach", "42", "--record", "r.stsc", "--export-dir", "d"]).unwrap();
        match cli.command {
            Some(Command::Attach { target, options }) => {
                assert_eq!(target, Some(Target::Pid(42)));
                assert_eq!((options.record, options.export_dir), (Some("r.stsc".into()), Some("d".into())));
            }
            other => panic!("{other:?}"),
        }
        // Not before another subcommand, where they would mean nothing.
        assert!(Cli::try_parse_from(["stallscope", "--record", "r.stsc", "list"]).is_err());
    }

    #[test]
    fn each_cause_is_printed_once() {
        let io = std::io::Error::from(std::io::ErrorKind::NotFound);
        let wire = stallscope_wire::Error::from(io);
        let e = anyhow::Error::new(wire).context("while reading the recording x.stsc");
        assert_eq!(format!("{e:#}").matches("not found").count(), 2, "anyhow alone repeats it: {e:#}");
        assert_eq!(error_text(&e), "while reading the recording x.stsc: i/o error: entity not found");
    }

    #[test]
    fn export_needs_an_output() {
        let e = Cli::try_parse_from(["stallscope", "export", "x.stsc"]).unwrap_err();
        assert_eq!(e.kind(), clap::error::ErrorKind::MissingRequiredArgument);
        assert!(Cli::try_parse_from(["stallscope", "export", "x.stsc", "--folded", "-"]).is_ok());
    }

    #[test]
    fn bad_arguments_are_refused_with_the_reason() {
        let e = Cli::try_parse_from(["stallscope", "record", "tcp://h", "-o", "x"]).unwrap_err().to_string();
        assert!(e.contains("missing :PORT"), "{e}");
        let e = Cli::try_parse_from(["stallscope", "record", "-d", "ten", "-o", "x"]).unwrap_err().to_string();
        assert!(e.contains("bad duration 'ten'"), "{e}");
        let e = Cli::try_parse_from(["stallscope", "export", "x", "--svg", "o", "--since", "soon"]).unwrap_err();
        assert!(e.to_string().contains("RFC 3339"), "{e}");
    }
}
