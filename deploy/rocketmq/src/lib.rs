//! Holds no code: it puts the rocketmq-rust servers in the workspace graph (see build.sh).
