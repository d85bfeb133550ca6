"""Points aio-pika's own test suite at a running broker.

aio-pika's tests start RabbitMQ in a Docker container through their
tests/docker_client.py. This plugin (loaded with `-p`, before their
conftest) answers that client's questions with the target named by
RABBITMQ_HOST / RABBITMQ_5672_TCP instead; no test or assertion is changed.
"""
import os

import tests.docker_client as docker_client

HOST = os.environ.get("RABBITMQ_HOST", "127.0.0.1")
PORT = int(os.environ.get("RABBITMQ_5672_TCP", "5672"))


class TargetBroker(docker_client.DockerClient):
    def __init__(self, *args, **kwargs):
        pass

    def run(self, image, ports, environment=None):
        # 5671 (TLS) is not served by either target: its tests fail to connect.
        return docker_client.ContainerInfo(
            id="target", ports={"5672/tcp": PORT, "5671/tcp": 5671}, host=HOST)

    def kill(self, *args, **kwargs):
        pass

    def remove(self, *args, **kwargs):
        pass


docker_client.check_docker_available = lambda: docker_client.DockerHostInfo(
    is_tcp=True, host=HOST, port=0)
docker_client.DockerClient = TargetBroker
