# Celery's canvas examples ("Next Steps: Canvas: Designing Work-flows" and the
# "Canvas" user guide), each session line printed: only the imports changed
# (was: from celery import chain, chord, group).
from brigade.celery import chain, chord, group
from tasks import add, mul, tsum, xsum

# Signatures: a partial one gets the call's argument first.
s2 = add.s(2)
res = s2.delay(8)
print('partial:', res.get(timeout=30))

# Groups
print('group:', group(add.s(i, i) for i in range(10))().get(timeout=30))
g = group(add.s(i) for i in range(10))
print('partial group:', g(10).get(timeout=30))

# Chains: (4 + 4) * 8
print('chain:', chain(add.s(4, 4) | mul.s(8))().get(timeout=30))
g = chain(add.s(4) | mul.s(8))
print('partial chain:', g(4).get(timeout=30))
print('pipe:', (add.s(4, 4) | mul.s(8))().get(timeout=30))
res = chain(add.s(2, 2), add.s(4), add.s(8))()
print('three steps:', res.get(timeout=30))
print('parent:', res.parent.get(timeout=30))
print('grandparent:', res.parent.parent.get(timeout=30))
print('immutable:', (add.si(2, 2) | add.si(4, 4) | add.si(8, 8))().get(timeout=30))

# Chords
print('chord:', chord((add.s(i, i) for i in range(10)), xsum.s())().get(timeout=30))
print('group | task:', (group(add.s(i, i) for i in range(10)) | xsum.s())().get(timeout=30))
print('chord of 100:', chord(add.s(i, i) for i in range(100))(tsum.s()).get(timeout=60))
