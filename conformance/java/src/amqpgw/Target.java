package amqpgw;

import com.rabbitmq.client.ConnectionFactory;

/**
 * The broker under test, from -Damqp.host / -Damqp.port. build.sh points the
 * suite's connection factories here (TestUtils.connectionFactory(), the
 * ConnectionFactory subclasses of some tests, raw sockets of ConnectionOpen).
 */
public final class Target {
    private Target() {}

    public static String host() {
        return System.getProperty("amqp.host", "127.0.0.1");
    }

    public static int port() {
        return Integer.getInteger("amqp.port", 5672);
    }

    public static ConnectionFactory apply(ConnectionFactory factory) {
        factory.setHost(host());
        factory.setPort(port());
        return factory;
    }
}
