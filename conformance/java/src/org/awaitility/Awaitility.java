package org.awaitility;

import java.util.concurrent.Callable;
import org.hamcrest.Matcher;

/**
 * The little of Awaitility the suite uses (Metrics: waitAtMost(d).until(supplier,
 * matcher)): polls every 50 ms until the matcher accepts the supplied value,
 * or fails with an AssertionError when the duration is over.
 */
public final class Awaitility {
    private Awaitility() {}

    public static Condition waitAtMost(Duration duration) {
        return new Condition(duration.millis);
    }

    public static final class Condition {
        private final long millis;

        Condition(long millis) {
            this.millis = millis;
        }

        public <T> T until(Callable<T> supplier, Matcher<? super T> matcher) {
            long deadline = System.currentTimeMillis() + millis;
            T last;
            while (true) {
                try {
                    last = supplier.call();
                } catch (Exception e) {
                    throw new RuntimeException(e);
                }
                if (matcher.matches(last)) {
                    return last;
                }
                if (System.currentTimeMillis() >= deadline) {
                    throw new AssertionError("condition not met within " + millis + " ms: expected "
                            + matcher + ", last value " + last);
                }
                try {
                    Thread.sleep(50);
                } catch (InterruptedException e) {
                    Thread.currentThread().interrupt();
                    throw new AssertionError("interrupted while waiting for " + matcher);
                }
            }
        }
    }
}
