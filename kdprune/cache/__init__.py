"""The content-addressed teacher cache."""

from kdprune.cache.teacher_cache import TeacherCache, atomic_save, cache_key

__all__ = ["TeacherCache", "atomic_save", "cache_key"]
