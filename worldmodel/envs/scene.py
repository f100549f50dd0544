"""MJCF for the PushTable world, built as a string from a few numbers.

Layout (metres; the table top is the plane z = 0, x to the right and y away from the camera):

- A table with a low wall around it (a bin, as in BAIR) whose inner faces are at |x|, |y| = ``TABLE_HALF``.
- A SCARA-like arm standing behind the table at ``ARM_BASE``: a base column, an upper arm and a forearm
  turning about vertical axes, and a vertical quill that slides through the wrist down to a palm with two
  slide fingers. The palm is a free body welded to a mocap target (end-effector control); the column and
  the two horizontal links are mocap bodies whose poses the env sets from the palm position by planar
  inverse kinematics, so the arm *looks* like an arm at no physics cost.
- ``MAX_OBJECTS`` object slots. Each slot is one free body holding one geom of every shape; per episode
  the env shows one of them (geom group 0) and hides the others (group ``HIDDEN_GROUP``, no contacts), and
  sets its size, colour, mass, inertia and friction. Absent slots are hidden and float, gravity
  compensated, far from the table. The model is thus compiled once per env.
- A fixed oblique camera ``front`` over the front edge of the table, like BAIR's ``image_aux1``.
- A flat, contact-free goal disc on the table (optional) whose radius is the success tolerance.
"""

from __future__ import annotations

MAX_OBJECTS = 4
SHAPES = ("box", "cylinder", "ellipsoid")
HIDDEN_GROUP = 4

TABLE_HALF = 0.27  # inner half-width of the bin
WALL_HEIGHT = 0.05
ARM_BASE = (0.0, 0.52)  # xy of the column axis, behind the back wall
SHOULDER_Z = 0.30  # height of the upper arm
ELBOW_Z = 0.255  # height of the forearm
LINK1 = 0.40
LINK2 = 0.40
FINGER_OPEN_X = 0.045  # finger centre offset from the palm axis when open
FINGER_TRAVEL = 0.035  # how far each finger slides in when closed
PARK_XY = (3.0, 3.0)  # where absent objects float
PARK_Z = 1.0

# Collision bits: static scene (table, walls) = 1; objects collide with everything; the gripper only
# with objects (its height is clamped above the table, so it never needs the table).
_STATIC = 'contype="1" conaffinity="0"'
_OBJECT = 'contype="1" conaffinity="3"'
_GRIPPER = 'contype="2" conaffinity="0"'
_VISUAL = 'contype="0" conaffinity="0"'


def _walls() -> str:
    h, t, z = TABLE_HALF, 0.015, WALL_HEIGHT / 2
    out = h + t
    rgba = 'rgba="0.55 0.42 0.30 1"'
    return "\n".join(
        [
            f'<geom name="wall_px" type="box" pos="{out} 0 {z}" size="{t} {out + t} {z}" {rgba} {_STATIC}/>',
            f'<geom name="wall_nx" type="box" pos="{-out} 0 {z}" size="{t} {out + t} {z}" {rgba} {_STATIC}/>',
            f'<geom name="wall_py" type="box" pos="0 {out} {z}" size="{h} {t} {z}" {rgba} {_STATIC}/>',
            f'<geom name="wall_ny" type="box" pos="0 {-out} {z}" size="{h} {t} {z}" {rgba} {_STATIC}/>',
        ]
    )


def _objects() -> str:
    bodies = []
    for i in range(MAX_OBJECTS):
        x = PARK_XY[0] + 0.3 * i
        geoms = "\n".join(
            f'<geom name="obj{i}_{shape}" type="{shape}" size="0.03 0.03 0.03" group="{HIDDEN_GROUP}" '
            f'rgba="0.8 0.2 0.2 1" contype="0" conaffinity="0" friction="0.5 0.005 0.0001"/>'
            for shape in SHAPES
        )
        bodies.append(
            f'<body name="obj{i}" pos="{x} {PARK_XY[1]} {PARK_Z}" gravcomp="1">\n'
            f'  <freejoint name="obj{i}_free"/>\n'
            f'  <inertial pos="0 0 0" mass="0.1" diaginertia="6e-5 6e-5 6e-5"/>\n'
            f"  {geoms}\n</body>"
        )
    return "\n".join(bodies)


def _arm() -> str:
    bx, by = ARM_BASE
    dark, light = 'rgba="0.25 0.27 0.30 1"', 'rgba="0.85 0.86 0.88 1"'
    return f"""
<body name="column" mocap="true" pos="{bx} {by} 0">
  <geom type="cylinder" fromto="0 0 -0.3 0 0 {SHOULDER_Z + 0.03}" size="0.05" {dark} {_VISUAL}/>
</body>
<body name="link1" mocap="true" pos="{bx} {by} {SHOULDER_Z}">
  <geom type="capsule" fromto="0 0 0 {LINK1} 0 0" size="0.035" {light} {_VISUAL}/>
  <geom type="cylinder" fromto="{LINK1} 0 -0.035 {LINK1} 0 0.02" size="0.04" {dark} {_VISUAL}/>
</body>
<body name="link2" mocap="true" pos="{bx + LINK1} {by} {ELBOW_Z}">
  <geom type="capsule" fromto="0 0 0 {LINK2} 0 0" size="0.03" {light} {_VISUAL}/>
  <geom type="cylinder" fromto="{LINK2} 0 -0.04 {LINK2} 0 0.03" size="0.03" {dark} {_VISUAL}/>
</body>
<body name="ee_target" mocap="true" pos="0 0 0.12"/>
<body name="palm" pos="0 0 0.12" gravcomp="1">
  <freejoint name="palm_free"/>
  <site name="ee" pos="0 0 0" size="0.005" group="{HIDDEN_GROUP}"/>
  <geom name="palm" type="box" pos="0 0 0.07" size="0.06 0.02 0.012" mass="0.3"
        rgba="0.15 0.15 0.17 1" {_GRIPPER}/>
  <geom name="quill" type="cylinder" fromto="0 0 0.08 0 0 0.62" size="0.013" mass="0.05" {light} {_VISUAL}/>
  <body name="finger_l" pos="{-FINGER_OPEN_X} 0 0.03" gravcomp="1">
    <joint name="finger_l" type="slide" axis="1 0 0" range="0 {FINGER_TRAVEL}" damping="2" armature="0.01"/>
    <geom name="finger_l" type="box" size="0.006 0.014 0.03" mass="0.03" rgba="0.1 0.1 0.1 1" {_GRIPPER}/>
  </body>
  <body name="finger_r" pos="{FINGER_OPEN_X} 0 0.03" gravcomp="1">
    <joint name="finger_r" type="slide" axis="-1 0 0" range="0 {FINGER_TRAVEL}" damping="2" armature="0.01"/>
    <geom name="finger_r" type="box" size="0.006 0.014 0.03" mass="0.03" rgba="0.1 0.1 0.1 1" {_GRIPPER}/>
  </body>
</body>"""


def _look_at_axes(pos: tuple[float, ...], lookat: tuple[float, ...]) -> list[float]:
    """Camera x (right) and y (up) axes for a camera at ``pos`` looking at ``lookat`` (world z up)."""
    f = [b - a for a, b in zip(pos, lookat, strict=True)]
    n = sum(v * v for v in f) ** 0.5
    f = [v / n for v in f]
    right = [f[1], -f[0], 0.0]  # f x (0, 0, 1)
    n = sum(v * v for v in right) ** 0.5
    right = [v / n for v in right]
    up = [
        right[1] * f[2] - right[2] * f[1],
        right[2] * f[0] - right[0] * f[2],
        right[0] * f[1] - right[1] * f[0],
    ]
    return right + up


def build_mjcf(
    *,
    image_size: int,
    timestep: float,
    success_tolerance: float,
    show_goal_marker: bool,
    camera_pos: tuple[float, float, float],
    camera_lookat: tuple[float, float, float],
    camera_fovy: float,
) -> str:
    """Return the MJCF text of the scene (compiled once per env; objects are configured at reset)."""
    goal_rgba = "0.32 0.32 0.36 1" if show_goal_marker else "0 0 0 0"
    goal_group = 0 if show_goal_marker else HIDDEN_GROUP
    cx, cy, cz = camera_pos
    xyaxes = " ".join(f"{v:.6f}" for v in _look_at_axes(camera_pos, camera_lookat))
    th = TABLE_HALF + 0.03
    return f"""
<mujoco model="push_table">
  <compiler angle="radian" autolimits="true"/>
  <option timestep="{timestep}" integrator="implicitfast" iterations="30" ls_iterations="8"/>
  <visual>
    <quality shadowsize="0" offsamples="0" numslices="12" numstacks="6" numquads="1"/>
    <global offwidth="{image_size}" offheight="{image_size}"/>
    <headlight ambient="0.45 0.45 0.45" diffuse="0.5 0.5 0.5" specular="0 0 0"/>
    <map znear="0.05"/>
  </visual>
  <worldbody>
    <light name="top" directional="true" pos="0 0 2" dir="0.2 0.3 -1" diffuse="0.35 0.35 0.35"
           specular="0 0 0" castshadow="false"/>
    <camera name="front" pos="{cx} {cy} {cz}" xyaxes="{xyaxes}" fovy="{camera_fovy}"/>
    <geom name="floor" type="box" pos="0 0 -0.8" size="3 3 0.05" rgba="0.42 0.44 0.47 1" {_VISUAL}/>
    <geom name="table_body" type="box" pos="0 0 -0.033" size="{th} {th} 0.03" rgba="0.55 0.42 0.30 1"
          {_VISUAL}/>
    <geom name="table_top" type="box" pos="0 0 -0.001" size="{TABLE_HALF} {TABLE_HALF} 0.001"
          rgba="0.80 0.76 0.68 1" {_VISUAL}/>
    <!-- contacts with the table top use a plane (cheap); planes render slowly, so it is hidden -->
    <geom name="table" type="plane" size="{TABLE_HALF} {TABLE_HALF} 0.01" group="{HIDDEN_GROUP}"
          friction="0.3 0.005 0.0001" {_STATIC}/>
    {_walls()}
    <body name="goal" mocap="true" pos="0 0 0">
      <geom name="goal" type="cylinder" pos="0 0 0.0012" size="{success_tolerance} 0.001"
            rgba="{goal_rgba}" group="{goal_group}" {_VISUAL}/>
    </body>
    {_arm()}
    {_objects()}
  </worldbody>
  <equality>
    <weld name="ee_weld" body1="palm" body2="ee_target" relpose="0 0 0 1 0 0 0"
          solref="{max(0.02, 2 * timestep)} 1"/>
  </equality>
  <contact>
    <exclude body1="palm" body2="finger_l"/>
    <exclude body1="palm" body2="finger_r"/>
  </contact>
  <actuator>
    <position name="finger_l" joint="finger_l" kp="300" ctrlrange="0 {FINGER_TRAVEL}"/>
    <position name="finger_r" joint="finger_r" kp="300" ctrlrange="0 {FINGER_TRAVEL}"/>
  </actuator>
</mujoco>
"""
