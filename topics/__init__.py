"""Roomstream's topics as data (``definitions``) and applying them to a cluster (``apply``)."""

from topics.apply import TopicReport, apply_topics
from topics.definitions import TopicSpec, topic_specs

__all__ = ["TopicReport", "TopicSpec", "apply_topics", "topic_specs"]
