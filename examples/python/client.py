# Calling the tasks, as Celery's docs do: only the imports changed
# (was: from celery import group).
import os
import sys
import tempfile

from brigade.celery import group
from tasks import add, count_words, tsum

result = add.delay(4, 4)
print('add:', result.get(timeout=30))
print('ready:', result.ready())

print('group:', group(add.s(i, i) for i in range(10))().get(timeout=30))

path = os.path.join(tempfile.mkdtemp(), 'words.txt')
with open(path, 'w') as f:
    f.write('the quick brown fox jumps over the lazy dog')
print('count_words:', count_words.delay(path).get(timeout=60))

r = tsum.delay([1, 2, 3])
print('tsum:', r.get(timeout=30))

try:
    add.delay(1, 'a').get(timeout=30)
except Exception as exc:
    print('failed:', type(exc).__name__, exc.type, file=sys.stdout)
