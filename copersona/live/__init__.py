"""A store that keeps living after its build: users forgotten on request (and, next, new reviews
added) without a rebuild, each change transactional."""

from copersona.live.erase import Erasure, erase_user

__all__ = ["Erasure", "erase_user"]
