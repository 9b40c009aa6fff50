"""The ipyparallel tutorial's steps as a script, against a running bramble: the import line
changed, `%px` written as `dview.execute` (a script has no magics), Python 3's `print`.

    BRAMBLE_HOME=... python python/examples/seed_tutorial.py
"""

import bramble as ipp

c = ipp.Client()
c.wait_for_engines(4, timeout=60)  # the engines start with their workers
print("c.ids ->", c.ids)

print(c[:].apply_sync(lambda: "Hello World"))

dview = c[:]
dview.scatter("x", range(64))
dview.execute("y = [i**10 for i in x]")  # %px y = [i**10 for i in x]
y = dview.gather("y")
print(y.get()[:10], "...")

lview = c.load_balanced_view()
lview.block = True
result = lview.map(lambda x: x**10, range(64), chunksize=10)
for i in enumerate(result):
    if i[0] < 3 or i[0] == 63:
        print(i)
c.close()
