//! Metric names, in one place. Counters are per event kind, never per message
//! label (no queue or exchange names as labels on the hot path).

pub const CONNECTIONS_OPENED: &str = "amqp_gateway_connections_opened_total";
pub const CONNECTIONS_OPEN: &str = "amqp_gateway_connections_open";
pub const PUBLISHED: &str = "amqp_gateway_published_total";
pub const UNROUTABLE: &str = "amqp_gateway_unroutable_total";
pub const CONFIRMED: &str = "amqp_gateway_confirmed_total";
pub const SEND_FAILED: &str = "amqp_gateway_send_failed_total";
pub const BLOCKED: &str = "amqp_gateway_connection_blocked_total";
pub const UPSTREAM_ADMISSION_RETRIES: &str = "amqp_gateway_upstream_admission_retries_total";
pub const DELIVERED: &str = "amqp_gateway_delivered_total";
pub const REDELIVERED: &str = "amqp_gateway_redelivered_total";
pub const ACKED: &str = "amqp_gateway_acked_total";
pub const DEAD_LETTERED: &str = "amqp_gateway_dead_lettered_total";
pub const REDELIVERY_LOST: &str = "amqp_gateway_redelivery_lost_total";
pub const EXPIRED: &str = "amqp_gateway_expired_total";
pub const REJECTED_FULL: &str = "amqp_gateway_rejected_full_queue_total";
pub const CONNECTIONS_REFUSED: &str = "amqp_gateway_connections_refused_total";
pub const GET_EMPTY_UNANSWERED: &str = "amqp_gateway_get_empty_unanswered_total";
