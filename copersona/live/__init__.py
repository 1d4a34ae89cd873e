"""A store that keeps living after its build: users forgotten on request (and, next, new reviews
added) without a rebuild, each change transactional."""

from copersona.live.erase import Erasure, erase_user
from copersona.live.update import Update, add_reviews

__all__ = ["Erasure", "Update", "add_reviews", "erase_user"]
