package amqpgw;

import java.io.FileDescriptor;
import java.io.FileOutputStream;
import java.io.IOException;
import java.io.PrintStream;
import java.lang.reflect.Modifier;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Paths;
import java.util.ArrayList;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

import org.junit.runner.Description;
import org.junit.runner.JUnitCore;
import org.junit.runner.Request;
import org.junit.runner.notification.Failure;
import org.junit.runner.notification.RunListener;

/**
 * Runs JUnit 4 test classes one test at a time, each in its own thread with a
 * deadline, so that a hanging test fails instead of blocking the run. Prints
 * one line per test on stdout:
 *
 *   PASS|FAIL|SKIP Class.method [reason]
 *
 * and everything the tests print on stderr.
 *
 *   java amqpgw.SuiteRunner [--timeout SECONDS] [--excluded FILE] CLASS...
 *
 * FILE has lines "Class[.method] reason" ('#' starts a comment): those tests
 * are not run, and reported as SKIP with "excluded: reason".
 */
public final class SuiteRunner {
    private SuiteRunner() {}

    public static void main(String[] args) throws Exception {
        PrintStream out = new PrintStream(new FileOutputStream(FileDescriptor.out), true, "UTF-8");
        System.setOut(System.err);
        long timeout = 30;
        Map<String, String> excluded = new LinkedHashMap<>();
        List<String> classes = new ArrayList<>();
        for (int i = 0; i < args.length; i++) {
            switch (args[i]) {
                case "--timeout": timeout = Long.parseLong(args[++i]); break;
                case "--excluded": readExcluded(args[++i], excluded); break;
                default: classes.add(args[i]);
            }
        }
        for (String name : classes) {
            Class<?> c = Class.forName(name);
            if (Modifier.isAbstract(c.getModifiers())) {
                continue;
            }
            for (Description test : leaves(Request.aClass(c).getRunner().getDescription())) {
                String id = c.getSimpleName() + "." + test.getMethodName();
                String why = excludedReason(excluded, c.getSimpleName(), test.getMethodName());
                long t0 = System.nanoTime();
                String line = why != null ? "SKIP " + id + " excluded: " + why
                                          : runOne(c, test, id, timeout);
                out.println(line);
                System.err.printf("=== %s (%.1f s)%n", line, (System.nanoTime() - t0) / 1e9);
            }
        }
        // Connections of failed or timed-out tests keep non-daemon threads alive.
        System.exit(0);
    }

    private static String runOne(Class<?> c, Description test, String id, long timeout)
            throws InterruptedException {
        List<String> outcomes = Collections.synchronizedList(new ArrayList<>());
        JUnitCore core = new JUnitCore();
        core.addListener(new RunListener() {
            @Override public void testFailure(Failure f) {
                outcomes.add("FAIL " + id + " " + reason(f.getException()));
            }

            @Override public void testAssumptionFailure(Failure f) {
                outcomes.add("SKIP " + id + " " + reason(f.getException()));
            }

            @Override public void testIgnored(Description d) {
                outcomes.add("SKIP " + id + " @Ignore");
            }
        });
        Thread thread = new Thread(() -> core.run(Request.aClass(c).filterWith(test)), id);
        thread.setDaemon(true);
        System.err.println("=== " + id + " ...");
        thread.start();
        thread.join(timeout * 1000);
        if (thread.isAlive()) {
            thread.interrupt();
            return "FAIL " + id + " timed out after " + timeout + " s";
        }
        synchronized (outcomes) {
            for (String o : outcomes) {
                if (o.startsWith("FAIL")) {
                    return o;
                }
            }
            return outcomes.isEmpty() ? "PASS " + id : outcomes.get(0);
        }
    }

    private static List<Description> leaves(Description d) {
        List<Description> all = new ArrayList<>();
        if (d.isTest()) {
            all.add(d);
        }
        for (Description child : d.getChildren()) {
            all.addAll(leaves(child));
        }
        return all;
    }

    /** The exception's type and the first line of its message (or of its cause's). */
    private static String reason(Throwable e) {
        Throwable t = e;
        while (t.getMessage() == null && t.getCause() != null) {
            t = t.getCause();
        }
        String message = t.getMessage() == null ? "" : t.getMessage().trim();
        int nl = message.indexOf('\n');
        if (nl >= 0) {
            message = message.substring(0, nl);
        }
        String r = (t == e ? e.getClass().getSimpleName()
                           : e.getClass().getSimpleName() + " <- " + t.getClass().getSimpleName())
                   + (message.isEmpty() ? "" : ": " + message);
        return r.length() > 200 ? r.substring(0, 200) : r;
    }

    private static void readExcluded(String file, Map<String, String> excluded) throws IOException {
        for (String line : Files.readAllLines(Paths.get(file), StandardCharsets.UTF_8)) {
            line = line.trim();
            if (line.isEmpty() || line.startsWith("#")) {
                continue;
            }
            String[] parts = line.split("\\s+", 2);
            excluded.put(parts[0], parts.length > 1 ? parts[1] : "");
        }
    }

    /** "Class" or "Class.method"; "method[0]" (a parameterized run) counts as "method". */
    private static String excludedReason(Map<String, String> excluded, String cls, String method) {
        String why = excluded.get(cls);
        if (why == null && method != null) {
            int bracket = method.indexOf('[');
            why = excluded.get(cls + "." + (bracket >= 0 ? method.substring(0, bracket) : method));
        }
        return why;
    }
}
