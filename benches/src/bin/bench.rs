//! Runs every scenario on every target given, one after the other on the same
//! machine, and writes report.md and chart.svg. benches/run.sh starts the
//! targets and calls this; see docs/benchmarks.md.
//!
//!   bench --gateway 127.0.0.1:5682 --gateway-pids 123 --rocketmq-pids 45,46 \
//!         --rabbitmq 127.0.0.1:5673 --rabbitmq-pids 78 --name-server 127.0.0.1:9886 \
//!         --null 127.0.0.1:5683 --null-pids 90 --seconds 10 --out benches/results

#![recursion_limit = "512"]

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use benches::measure::{cpu_seconds, Counters, CpuMeter, Process, Watch};
use benches::report::{self, Row};
use benches::{amqp, direct::Direct, first, lmq, pop, Kind, Outcome, Plan, Scenario, Target};
use clap::Parser;

#[derive(Debug, Parser)]
struct Args {
    /// The gateway on RocketMQ (host:port).
    #[arg(long)]
    gateway: Option<String>,
    #[arg(long, value_delimiter = ',')]
    gateway_pids: Vec<u32>,
    /// A second gateway on the same RocketMQ and meta store (scenario 6).
    #[arg(long)]
    gateway2: Option<String>,
    #[arg(long, value_delimiter = ',')]
    gateway2_pids: Vec<u32>,
    /// RocketMQ's broker and name server (CPU and memory).
    #[arg(long, value_delimiter = ',')]
    rocketmq_pids: Vec<u32>,
    /// The gateway with the null upstream (host:port).
    #[arg(long)]
    null: Option<String>,
    #[arg(long, value_delimiter = ',')]
    null_pids: Vec<u32>,
    /// RabbitMQ (host:port).
    #[arg(long)]
    rabbitmq: Option<String>,
    #[arg(long, value_delimiter = ',')]
    rabbitmq_pids: Vec<u32>,
    /// RocketMQ's name server, for the direct client (host:port).
    #[arg(long)]
    name_server: Option<String>,
    /// Seconds each run publishes.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    #[arg(long, default_value_t = 1024)]
    size: usize,
    #[arg(long, default_value_t = 1000)]
    connections: usize,
    /// Scenarios to run, by number (1 publish, 2 end to end, 3 fan-out to 4 and 16,
    /// 4 many connections, 5 first delivery to a new consumer, 6 one queue on two gateways).
    #[arg(long, value_delimiter = ',', default_values_t = [1, 2, 3, 4, 5, 6])]
    only: Vec<u8>,
    /// Targets to run, by name (gateway, gateway-null, rabbitmq, direct, direct-lmq; direct-pop only when named).
    #[arg(long, value_delimiter = ',')]
    targets: Vec<String>,
    #[arg(long, default_value = "benches/results")]
    out: PathBuf,
    /// A line about the machine, for the report.
    #[arg(long, default_value = "")]
    machine: String,
}

fn process(label: &str, pids: &[u32]) -> Option<Process> {
    (!pids.is_empty()).then(|| Process {
        label: label.into(),
        pids: pids.to_vec(),
    })
}

fn targets(args: &Args) -> Vec<Target> {
    let mut out = Vec::new();
    if let Some(addr) = &args.gateway {
        out.push(Target {
            name: "gateway".into(),
            kind: Kind::Amqp(addr.clone()),
            processes: [
                process("gateway", &args.gateway_pids),
                process("rocketmq", &args.rocketmq_pids),
            ]
            .into_iter()
            .flatten()
            .collect(),
            second: args.gateway2.clone().map(|addr| {
                let pids = args.gateway2_pids.clone();
                let label = "gateway 2".to_owned();
                (addr, Process { label, pids })
            }),
        });
    }
    if let Some(addr) = &args.null {
        out.push(Target {
            name: "gateway-null".into(),
            kind: Kind::Amqp(addr.clone()),
            processes: process("gateway", &args.null_pids).into_iter().collect(),
            second: None,
        });
    }
    if let Some(addr) = &args.rabbitmq {
        out.push(Target {
            name: "rabbitmq".into(),
            kind: Kind::Amqp(addr.clone()),
            processes: process("rabbitmq", &args.rabbitmq_pids)
                .into_iter()
                .collect(),
            second: None,
        });
    }
    if let Some(addr) = &args.name_server {
        out.push(Target {
            name: "direct".into(),
            kind: Kind::Direct(addr.clone()),
            processes: process("rocketmq", &args.rocketmq_pids)
                .into_iter()
                .collect(),
            second: None,
        });
        out.push(Target {
            name: "direct-lmq".into(),
            kind: Kind::DirectLmq(addr.clone()),
            processes: process("rocketmq", &args.rocketmq_pids)
                .into_iter()
                .collect(),
            second: None,
        });
        out.push(Target {
            name: "direct-pop".into(),
            kind: Kind::DirectPop(addr.clone()),
            processes: process("rocketmq", &args.rocketmq_pids)
                .into_iter()
                .collect(),
            second: None,
        });
    }
    // direct-pop runs only when named (benches/src/pop.rs says why).
    out.retain(|t| {
        if args.targets.is_empty() {
            t.name != "direct-pop"
        } else {
            args.targets.contains(&t.name)
        }
    });
    out
}

async fn run(
    scenario: Scenario,
    target: &Target,
    plan: &Plan,
    direct: Option<&Direct>,
    c: Arc<Counters>,
) -> std::io::Result<Outcome> {
    match (&target.kind, scenario) {
        (Kind::Amqp(addr), Scenario::Publish(w)) => amqp::publish_only(addr, plan, w, c).await,
        (Kind::Amqp(addr), Scenario::EndToEnd) => amqp::end_to_end(addr, plan, c).await,
        (Kind::Amqp(addr), Scenario::FanOut(n)) => amqp::fan_out(addr, plan, n, c).await,
        (Kind::Amqp(addr), Scenario::Many { connections, rate }) => {
            amqp::many_connections(addr, plan, connections, rate, c).await
        }
        (Kind::Amqp(addr), Scenario::FirstDelivery) => first::first_delivery(addr, plan, c).await,
        (Kind::Amqp(addr), Scenario::TwoGateways) => {
            let (second, _) = target
                .second
                .as_ref()
                .ok_or_else(|| std::io::Error::other("no second gateway (--gateway2)"))?;
            amqp::two_gateways(addr, second, plan, c).await
        }
        (Kind::DirectLmq(_), Scenario::EndToEnd | Scenario::FanOut(_)) => {
            let direct = direct.ok_or_else(|| std::io::Error::other("no RocketMQ client"))?;
            let queues = match scenario {
                Scenario::FanOut(n) => n,
                _ => 1,
            };
            lmq::fan_out(direct, plan, queues, c).await
        }
        (Kind::DirectLmq(_), _) => Err(std::io::Error::other("not applicable")),
        (Kind::DirectPop(_), Scenario::EndToEnd) => {
            let direct = direct.ok_or_else(|| std::io::Error::other("no RocketMQ client"))?;
            pop::end_to_end(direct, plan, c).await
        }
        (Kind::DirectPop(_), _) => Err(std::io::Error::other("not applicable")),
        (Kind::Direct(_), scenario) => {
            let direct = direct.ok_or_else(|| std::io::Error::other("no RocketMQ client"))?;
            match scenario {
                Scenario::Publish(w) => direct.publish_only(plan, w, c).await,
                Scenario::EndToEnd => direct.fan_out(plan, 1, c).await,
                Scenario::FanOut(n) => direct.fan_out(plan, n, c).await,
                Scenario::Many { .. } | Scenario::FirstDelivery | Scenario::TwoGateways => {
                    Err(std::io::Error::other("not applicable"))
                }
            }
        }
    }
}

/// Waits until every server is quiet (under a quarter of a core for a
/// second), at most two minutes: a broker still indexing or flushing what
/// one run stored would slow the next.
async fn settle(targets: &[Target]) {
    let mut pids: Vec<u32> = targets
        .iter()
        .flat_map(|t| t.processes.iter().flat_map(|p| p.pids.iter().copied()))
        .collect();
    pids.sort_unstable();
    pids.dedup();
    let busy = || -> f64 {
        pids.iter()
            .filter_map(|p| cpu_seconds(&p.to_string()))
            .sum()
    };
    let started = std::time::Instant::now();
    loop {
        let before = busy();
        tokio::time::sleep(Duration::from_secs(1)).await;
        let used = busy() - before;
        if used < 0.25 || started.elapsed() > Duration::from_secs(120) {
            if started.elapsed() > Duration::from_secs(3) {
                eprintln!(
                    "   servers settled after {:.0} s (last second: {:.2} CPU s)",
                    started.elapsed().as_secs_f64(),
                    used
                );
            }
            return;
        }
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let plan = Plan {
        duration: Duration::from_secs(args.seconds),
        size: args.size,
        window: 1000,
        prefetch: 1000,
    };
    let targets = targets(&args);
    if targets.is_empty() {
        return Err("no target given (--gateway, --null, --rabbitmq, --name-server)".into());
    }
    let direct = match targets.iter().find_map(|t| match &t.kind {
        Kind::Direct(ns) | Kind::DirectLmq(ns) | Kind::DirectPop(ns) => Some(ns.clone()),
        _ => None,
    }) {
        Some(ns) => Some(Direct::connect(&ns).await?),
        None => None,
    };
    let mut scenarios = Vec::new();
    for n in &args.only {
        match n {
            1 => scenarios.extend([
                Scenario::Publish(1),
                Scenario::Publish(100),
                Scenario::Publish(1000),
            ]),
            2 => scenarios.push(Scenario::EndToEnd),
            3 => scenarios.extend([Scenario::FanOut(4), Scenario::FanOut(16)]),
            4 => scenarios.push(Scenario::Many {
                connections: args.connections,
                rate: 10.0,
            }),
            5 => scenarios.push(Scenario::FirstDelivery),
            6 => scenarios.push(Scenario::TwoGateways),
            other => return Err(format!("no scenario {other}").into()),
        }
    }
    let mut rows = Vec::new();
    for scenario in &scenarios {
        for target in &targets {
            let name = format!("{} on {}", scenario.name(), target.name);
            let mut row = Row {
                scenario: scenario.name(),
                target: target.name.clone(),
                outcome: None,
                note: None,
                cpu: Vec::new(),
                rss: Vec::new(),
                bench_cpu: 0.0,
            };
            if let Some(reason) = scenario.not_applicable(target) {
                row.note = Some(format!("not applicable: {reason}"));
                rows.push(row);
                continue;
            }
            eprintln!("== {name}");
            let counters = Arc::new(Counters::default());
            let mut processes = target.processes.clone();
            if let (Scenario::TwoGateways, Some((_, second))) = (scenario, &target.second) {
                processes.push(second.clone());
            }
            let meters: Vec<CpuMeter> = processes.iter().map(CpuMeter::start).collect();
            let bench_started = cpu_seconds("self").unwrap_or(0.0);
            let watch = Watch::start(name.clone(), counters.clone(), &processes);
            let result = run(*scenario, target, &plan, direct.as_ref(), counters).await;
            row.rss = watch.stop();
            row.cpu = meters.iter().map(CpuMeter::stop).collect();
            row.bench_cpu = cpu_seconds("self").unwrap_or(0.0) - bench_started;
            match result {
                Ok(mut outcome) => {
                    match outcome.first.as_mut() {
                        Some(f) => eprintln!("   {}", f.summary()),
                        None => eprintln!(
                            "   {} published, {} delivered, {} nacked in {:.1} s{}",
                            outcome.published,
                            outcome.delivered,
                            outcome.nacked,
                            outcome.seconds,
                            report::split(&outcome)
                        ),
                    }
                    row.outcome = Some(outcome);
                }
                Err(e) => {
                    eprintln!("   failed: {e}");
                    row.note = Some(format!("failed: {e}"));
                }
            }
            rows.push(row);
            settle(&targets).await;
        }
    }
    std::fs::create_dir_all(&args.out)?;
    let chart = report::svg(
        &rows,
        &format!("1 KB persistent messages, {} s per run", args.seconds),
    );
    let mut table = report::markdown(&mut rows);
    if !args.machine.is_empty() {
        table = format!("{}\n\n{table}", args.machine);
    }
    std::fs::write(args.out.join("chart.svg"), chart)?;
    std::fs::write(args.out.join("report.md"), &table)?;
    println!("{table}");
    eprintln!(
        "wrote {} and chart.svg",
        args.out.join("report.md").display()
    );
    Ok(())
}
