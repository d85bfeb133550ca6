package org.awaitility;

import java.util.concurrent.TimeUnit;

/** The little of Awaitility's Duration the suite uses (Metrics); not on this machine. */
public class Duration {
    final long millis;

    public Duration(long amount, TimeUnit unit) {
        this.millis = unit.toMillis(amount);
    }
}
