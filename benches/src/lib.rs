//! Throughput and latency harness. Today: `publish-probe`, one publisher with
//! a confirm window. The side-by-side harness (gateway, RabbitMQ, direct
//! RocketMQ, null upstream) with report and chart is the benchmarks issue.
