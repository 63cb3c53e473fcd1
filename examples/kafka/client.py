#!/usr/bin/env python3
"""Talks to Kafka with kafka-python from a chosen source address (an identity) through the
proxy, and prints each result or error: produce a record, consume a topic from its start,
create or delete topics."""

import argparse
import socket
import sys

import kafka.errors
import kafka.net.inet
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic
from kafka.errors import KafkaError


class BoundSockets:
    """The socket module, with every socket bound to one source address first."""

    def __init__(self, source):
        self.source = source

    def socket(self, *args):
        sock = socket.socket(*args)
        sock.bind((self.source, 0))
        return sock

    def __getattr__(self, name):
        return getattr(socket, name)


def produce(bootstrap, topic, value):
    producer = KafkaProducer(bootstrap_servers=bootstrap, retries=0)
    try:
        meta = producer.send(topic, value.encode()).get(timeout=10)
        return f"stored at offset {meta.offset}"
    finally:
        producer.close()


def consume(bootstrap, topic):
    # A consumer fetches nothing, silently, from a topic whose metadata it may not see: ask for
    # that metadata first, to show why.
    described = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        error = described.describe_topics([topic])[0]["error_code"]
    finally:
        described.close()
    if error:
        raise kafka.errors.for_code(error)()
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                             enable_auto_commit=False)
    try:
        consumer.assign([TopicPartition(topic, 0)])
        consumer.seek_to_beginning()
        values = []
        for _ in range(6):
            for records in consumer.poll(timeout_ms=500).values():
                values += [record.value.decode() for record in records]
        return values
    finally:
        consumer.close()


def admin(bootstrap, action, topics):
    client = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        if action == "create":
            client.create_topics([NewTopic(topic, 1, 1) for topic in topics])
        else:
            client.delete_topics(topics)
        return "ok"
    finally:
        client.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--from", dest="source", required=True, help="source IP to bind (an identity)")
    parser.add_argument("--to", default="127.0.0.1:9093", help="HOST:PORT of the proxy")
    parser.add_argument("action", choices=["produce", "consume", "create", "delete"])
    parser.add_argument("args", nargs="+", help="produce: TOPIC VALUE; consume: TOPIC; create, delete: TOPIC...")
    args = parser.parse_args()
    kafka.net.inet.socket = BoundSockets(args.source)
    try:
        if args.action == "produce":
            result = produce(args.to, *args.args)
        elif args.action == "consume":
            result = consume(args.to, *args.args)
        else:
            result = admin(args.to, args.action, args.args)
    except KafkaError as error:  # the client's own error, shown as a person would see it
        result = type(error).__name__
    print(f"  {args.action} {' '.join(args.args):<40} -> {result}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
