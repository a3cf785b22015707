"""The worker's Kafka producer: faust's aiokafka producer, asking the cluster only about the
topics it uses.

An aiokafka client that tracks no topic asks for the metadata of every topic of the cluster,
and faust's producer tracks none when it declares its own topics at start (the table's
changelog, the leader topic), refreshing the metadata after each. On a cluster of thousands of
topics each answer took about a second to decode, on the worker's event loop: a restarted
worker took several seconds longer to rejoin its group, long enough on a busy machine to miss
its session and cost every worker a rebalance. Here each topic is tracked before it is declared,
so a refresh asks about the worker's topics only; those it sends to later are added by aiokafka
itself on the first send.
"""

from __future__ import annotations

from typing import Any

from faust.transport.drivers import aiokafka as faust_aiokafka

__all__ = ["Producer"]


class Producer(faust_aiokafka.Producer):  # type: ignore[misc]  # faust ships no types for it
    async def create_topic(self, topic: str, partitions: int, replication: int, **kw: Any) -> None:
        await self._ensure_producer().client.add_topic(topic)
        await super().create_topic(topic, partitions, replication, **kw)
